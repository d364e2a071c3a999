//! `rayos host` (the host service, rayosd, with the intent engine plugged
//! in) and its clients: `rayos vm`, `rayos apps`, `rayos events`,
//! `rayos api-bench`, and `rayos launch` without `--vsock`. The clients
//! only speak the service's API (rayosd::client).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rayos_contract::DesktopEntry;
use rayosd::client::{ApiClient, ApiClientError};
use rayosd::launch::{IntentAnswer, IntentResolver};
use rayosd::policy::{Machine, Policy};
use serde_json::{json, Value};

use super::{CliError, StoreArgs};
use crate::guest::printable;
use crate::intent::session::{Session, SessionOptions};
use crate::intent::Action;
use crate::models;

#[derive(Args, Debug)]
pub struct HostArgs {
    /// The policy file (default: /etc/rayos/policy.toml if it exists, else
    /// the built-in default: one VM `linux` from /var/lib/rayos/guest-image).
    #[arg(long, value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// Do not start the VMs the policy marks `autostart`.
    #[arg(long)]
    pub no_autostart: bool,
    /// Check the policy and the tools, print what would run, and exit.
    #[arg(long)]
    pub check: bool,
    /// Model for requests in words (loaded when first needed).
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the clients find the service.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The service's control socket (default: $XDG_RUNTIME_DIR/rayos/rayos.sock,
    /// or /run/rayos/rayos.sock for root).
    #[arg(long, env = "RAYOS_SOCKET", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

impl ApiArgs {
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.socket.clone().unwrap_or_else(rayosd::client::default_socket))
    }
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Every VM of the policy and its state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One VM: state, agent, children (pid, restarts), last exit.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Boot a VM.
    Start {
        name: String,
        /// Wait until its agent answers (or the boot fails).
        #[arg(long)]
        wait: bool,
    },
    /// Power a VM off: the agent is asked, then SIGTERM, then SIGKILL after the policy's timeout.
    Stop { name: String },
}

#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Args, Debug)]
pub struct AppsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The VM (default: the first running one).
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Stop after S seconds (default: never).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
}

#[derive(Args, Debug)]
pub struct WindowsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the compositor's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Requests to time (GET /v1/vms, one after another).
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
}

/// The model-backed intent engine for the service, loaded on first use and
/// rebuilt when a VM's catalog changes.
struct ModelResolver {
    model: String,
    store: Option<PathBuf>,
    session: Mutex<Option<(u64, Session)>>,
}

fn catalog_key(apps: &[DesktopEntry]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(apps).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl ModelResolver {
    /// The session for `catalog`, opened (model loaded, catalog indexed)
    /// unless the one held already serves it; returns the ms it took.
    fn ensure(&self, slot: &mut Option<(u64, Session)>, catalog: &[DesktopEntry]) -> Result<f64, String> {
        let key = catalog_key(catalog);
        if slot.as_ref().map(|(k, _)| *k) == Some(key) {
            return Ok(0.0);
        }
        let t = Instant::now();
        *slot = None;
        let opts = SessionOptions {
            model: self.model.clone(),
            store: self.store.clone(),
            entries: Some(catalog.to_vec()),
            ..SessionOptions::default()
        };
        *slot = Some((key, Session::open(&opts).map_err(|e| e.to_string())?));
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

impl IntentResolver for ModelResolver {
    fn resolve(&self, request: &str, catalog: &[DesktopEntry]) -> Result<IntentAnswer, String> {
        let mut slot = self.session.lock().map_err(|_| "the intent engine's lock is poisoned".to_string())?;
        let model_load_ms = self.ensure(&mut slot, catalog)?;
        let (_, session) = slot.as_ref().expect("loaded above");
        let t = Instant::now();
        let res = session.resolve(request).map_err(|e| e.to_string())?;
        let intent_ms = t.elapsed().as_secs_f64() * 1e3;
        let action: Value = serde_json::from_str(&res.action.to_json()).unwrap_or(Value::Null);
        let (app_id, confidence, message) = match &res.action {
            Action::Launch { app_id, confidence, .. } => {
                (Some(app_id.clone()), Some(*confidence as f64), format!("launch {app_id}"))
            }
            other => (None, None, super::launch_cmd::describe_non_launch(other)),
        };
        Ok(IntentAnswer { app_id, confidence, action, message, model_load_ms, intent_ms })
    }
}

fn api_err(e: ApiClientError) -> CliError {
    CliError::Api(e)
}

/// `rayos host`.
pub(super) fn host_cmd(a: HostArgs) -> Result<ExitCode, CliError> {
    let machine = Machine::this();
    let policy = Policy::load(a.policy.as_deref(), &machine).map_err(|e| CliError::Usage(e.to_string()))?;
    let exe = std::env::current_exe().ok();
    let tools = rayosd::find_tools(&policy, exe).map_err(|e| CliError::Usage(e.to_string()))?;
    if a.check {
        println!(
            "policy: {}",
            policy.file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "<default>".into())
        );
        println!("socket: {}", policy.host.socket.display());
        println!(
            "tools: rayos-vmm {}, rayos-vsock {}, virtiofsd {}",
            tools.rayos_vmm.display(),
            tools.rayos_vsock.display(),
            tools.virtiofsd.display()
        );
        for vm in &policy.vms {
            println!(
                "vm {}: image {}, {} MiB, {} vCPUs, {} shares, autostart {}",
                vm.name,
                vm.image.display(),
                vm.memory_mib,
                vm.cpus,
                vm.shares.len(),
                vm.autostart
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let resolver: Arc<dyn IntentResolver> =
        Arc::new(ModelResolver { model: a.model.clone(), store: a.store.root(), session: Mutex::new(None) });
    let opts = rayosd::ServiceOptions { policy, tools, resolver: Some(resolver), autostart: !a.no_autostart };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(rayosd::run(opts)).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn ms_field(v: &Value) -> String {
    v.as_u64().map(|m| format!("{:.1}s", m as f64 / 1e3)).unwrap_or_else(|| "-".into())
}

fn print_vm_line(v: &Value) {
    let since = v["since_ms"].as_u64().unwrap_or(0);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    println!(
        "{:<16} {:<9} {:>9} {:>9}",
        printable(v["name"].as_str().unwrap_or("?")),
        v["state"].as_str().unwrap_or("?"),
        format!("{:.0}s", now.saturating_sub(since) as f64 / 1e3),
        ms_field(&v["boot_to_agent_ms"])
    );
}

/// `rayos vm ...`.
pub(super) fn vm_cmd(a: VmArgs) -> Result<ExitCode, CliError> {
    let c = a.api.client();
    match a.command {
        VmCommand::List { json } => {
            let v = c.get("/v1/vms").map_err(api_err)?;
            if json {
                println!("{v}");
            } else {
                println!("{:<16} {:<9} {:>9} {:>9}", "NAME", "STATE", "IN STATE", "BOOT");
                for vm in v.as_array().into_iter().flatten() {
                    print_vm_line(vm);
                }
            }
        }
        VmCommand::Status { name, json } => {
            let v = c.get(&format!("/v1/vms/{name}")).map_err(api_err)?;
            if json {
                println!("{v}");
            } else {
                print_vm_line(&v);
                if let Some(a) = v["agent"].as_object() {
                    println!(
                        "  agent: {} (protocol {}, kernel {})",
                        printable(a["agent"].as_str().unwrap_or("")),
                        a["version"],
                        printable(a["kernel"].as_str().unwrap_or(""))
                    );
                }
                if let Some(e) = v["last_exit"].as_str() {
                    println!("  last exit: {}", printable(e));
                }
                println!("  restarts: {}", v["restarts"]);
                for ch in v["children"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<20} {:<8} pid {:<8} restarts {}",
                        ch["name"].as_str().unwrap_or("?"),
                        ch["state"].as_str().unwrap_or("?"),
                        ch["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        ch["restarts"]
                    );
                }
            }
        }
        VmCommand::Start { name, wait } => {
            let path = format!("/v1/vms/{name}/start{}", if wait { "?wait=true" } else { "" });
            let v = c.post(&path, json!({}), Duration::from_secs(3600)).map_err(api_err)?;
            println!("{name}: {}", v["state"].as_str().unwrap_or("?"));
        }
        VmCommand::Stop { name } => {
            let v = c.post(&format!("/v1/vms/{name}/stop"), json!({}), Duration::from_secs(3600)).map_err(api_err)?;
            println!(
                "{name}: {} ({})",
                v["state"].as_str().unwrap_or("?"),
                printable(v["message"].as_str().unwrap_or(""))
            );
            if v["clean"] != json!(true) && v["outcome"] != Value::Null {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rayos apps`.
pub(super) fn apps_cmd(a: AppsArgs) -> Result<ExitCode, CliError> {
    let c = a.api.client();
    let vm = match a.vm {
        Some(v) => v,
        None => {
            let vms = c.get("/v1/vms").map_err(api_err)?;
            let list = vms.as_array().cloned().unwrap_or_default();
            let pick = list.iter().find(|v| v["state"] == "running").or(list.first());
            pick.and_then(|v| v["name"].as_str())
                .map(str::to_string)
                .ok_or_else(|| CliError::Usage("the service has no VM".into()))?
        }
    };
    let apps = c.get(&format!("/v1/vms/{vm}/apps")).map_err(api_err)?;
    if a.json {
        println!("{apps}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = apps.as_array().cloned().unwrap_or_default();
    for e in &list {
        let what = e["generic_name"].as_str().or(e["comment"].as_str()).unwrap_or("");
        println!(
            "{:<45} {:<28} {}",
            printable(e["id"].as_str().unwrap_or("?")),
            printable(e["name"].as_str().unwrap_or("?")),
            printable(what)
        );
    }
    eprintln!("{} apps in VM {vm}", list.len());
    Ok(ExitCode::SUCCESS)
}

/// `rayos launch` through the service.
pub(super) fn launch_via_api(api: &ApiArgs, body: Value, json_out: bool, wait: bool) -> Result<ExitCode, CliError> {
    let c = api.client();
    let t = Instant::now();
    let r = c.post("/v1/launch", body, Duration::from_secs(if wait { 86_400 } else { 120 }));
    let v = match r {
        Ok(v) => v,
        Err(ApiClientError::Api { code, message, .. }) if code == "not_launched" => {
            if json_out {
                println!("{}", json!({"launched": null, "answer": message}));
            } else {
                println!("{}", printable(&message));
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(api_err(e)),
    };
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    if json_out {
        let mut v = v.clone();
        v["total_ms"] = json!(total_ms);
        println!("{v}");
    } else {
        for line in v["output"].as_array().into_iter().flatten() {
            eprintln!("{}", printable(line.as_str().unwrap_or("")));
        }
        let app = printable(v["app"].as_str().unwrap_or("?"));
        let shown = if v["native_window"] == json!(true) { " as a native window" } else { "" };
        println!(
            "launched {app}{shown} in VM {}: handle {}, guest pid {} ({total_ms:.0} ms)",
            v["vm"].as_str().unwrap_or("?"),
            v["handle"],
            v["pid"]
        );
        match (v["status"].as_i64(), v["signal"].as_i64()) {
            (Some(s), _) => println!("exited with status {s}"),
            (_, Some(g)) => println!("killed by signal {g}"),
            _ => {}
        }
    }
    if wait {
        return Ok(match (v["status"].as_i64(), v["signal"].as_i64()) {
            (Some(s), _) => ExitCode::from(s.clamp(0, 255) as u8),
            (_, Some(g)) => ExitCode::from((128 + g).clamp(0, 255) as u8),
            _ => ExitCode::from(1),
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// `rayos windows`.
pub(super) fn windows_cmd(a: WindowsArgs) -> Result<ExitCode, CliError> {
    let v = a.api.client().get("/v1/windows").map_err(api_err)?;
    if a.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = v["windows"].as_array().cloned().unwrap_or_default();
    for w in &list {
        let origin = match (w["origin"]["kind"].as_str(), w["origin"]["name"].as_str()) {
            (Some("vm"), Some(n)) => format!("vm:{n}"),
            (Some(k), _) => k.to_string(),
            _ => "?".into(),
        };
        println!(
            "{:<6} {:<12} {:<40} {}",
            w["id"],
            printable(&origin),
            printable(w["app_id"].as_str().unwrap_or("-")),
            printable(w["title"].as_str().unwrap_or(""))
        );
    }
    eprintln!("{} windows", list.len());
    Ok(ExitCode::SUCCESS)
}

/// `rayos events`.
pub(super) fn events_cmd(a: EventsArgs) -> Result<ExitCode, CliError> {
    let c = a.api.client();
    let timeout = Duration::from_secs(a.timeout.unwrap_or(u64::MAX / 4));
    c.events(a.count, timeout, |v| {
        println!("{v}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        true
    })
    .map_err(api_err)?;
    Ok(ExitCode::SUCCESS)
}

/// `rayos api-bench`: GET /v1/vms latency, one request after another.
pub(super) fn api_bench_cmd(a: ApiBenchArgs) -> Result<ExitCode, CliError> {
    let c = a.api.client();
    let n = a.requests.max(1);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.get("/v1/vms").map_err(api_err)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!("api_p50_ms={:.3} api_p99_ms={:.3} requests={n}", pct(0.5), pct(0.99));
    Ok(ExitCode::SUCCESS)
}
