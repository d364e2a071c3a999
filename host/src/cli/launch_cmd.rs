//! `rayos launch`: start a guest app by name or by a request in words, as a
//! native host window when the VM's bridge runs; and `rayos bridge`, which
//! runs that bridge.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rayos_contract::{AppRef, DisplayMode, GuestPolicy, Launch, CAP_WAYLAND_BRIDGE};

use super::{CliError, StoreArgs};
use crate::bridge::{self, BridgeConfig, Waypipe};
use crate::guest::{printable, GuestClient};
use crate::intent::engine::{validate_request, MAX_REQUEST_BYTES};
use crate::intent::session::{Session, SessionError, SessionOptions};
use crate::intent::Action;
use crate::models;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    #[command(flatten)]
    pub api: super::host_cmd::ApiArgs,
    /// The VM (through the host service; default: its first running VM).
    #[arg(long, value_name = "NAME", conflicts_with = "vsock")]
    pub vm: Option<String>,
    /// Wait for the app to exit; its output is shown and its status becomes
    /// this command's exit status.
    #[arg(long)]
    pub wait: bool,
    /// The words are a command line (`-- PROGRAM ARGS...`), run where the
    /// VM's policy allows command lines.
    #[arg(long)]
    pub command: bool,
    /// Talk to this guest's agent directly instead of through the host
    /// service: its hybrid vsock socket (the vsock backend's `--uds-path`).
    #[arg(long, env = "RAYOS_GUEST_VSOCK", value_name = "PATH")]
    pub vsock: Option<PathBuf>,
    /// Show the app inside the VM's desktop instead of as its own host window.
    #[arg(long)]
    pub embedded: bool,
    /// One JSON object: what was launched and how long each part took.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the agent's answers.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Model for requests in words.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// A desktop id (`foot.desktop`, or `foot`), an app's name, or a request
    /// in words ("open a terminal"), resolved by the intent engine over the
    /// guest's live catalog.
    #[arg(required = true, value_name = "APP_OR_REQUEST", trailing_var_arg = true, allow_hyphen_values = true)]
    pub request: Vec<String>,
}

pub use rayosd::launch::direct_match;

pub(super) fn launch_cmd(a: LaunchArgs) -> Result<ExitCode, CliError> {
    let Some(vsock) = a.vsock.clone() else {
        let words = a.request.join(" ");
        let mut body = serde_json::json!({"vm": a.vm, "wait": a.wait, "embedded": a.embedded});
        if a.command {
            body["command"] = serde_json::json!(a.request);
        } else if words.ends_with(".desktop") && !words.contains(char::is_whitespace) {
            body["app"] = serde_json::json!(words);
        } else {
            body["request"] = serde_json::json!(words);
        }
        return super::host_cmd::launch_via_api(&a.api, body, a.json, a.wait);
    };
    if a.command || a.wait {
        return Err(CliError::Usage(
            "--command and --wait go through the host service (use `rayos guest launch` with --vsock)".into(),
        ));
    }
    let words = a.request.join(" ");
    let words = validate_request(words.as_bytes(), MAX_REQUEST_BYTES)
        .map_err(|e| CliError::Session(SessionError::Engine(e)))?
        .to_string();
    let t_start = Instant::now();
    let native = !a.embedded;
    let bridged = native && bridge::is_served(&vsock);
    if native && !bridged {
        eprintln!(
            "rayos: no native-window bridge listens on {} (start `rayos bridge`); the app will have no window",
            bridge::listen_path(&vsock).display()
        );
    }
    let caps: &[&str] = if bridged { &[CAP_WAYLAND_BRIDGE] } else { &[] };
    let timeout = Duration::from_secs(a.timeout.max(1));
    let mut client =
        GuestClient::connect_with(&vsock, rayos_contract::AGENT_PORT, timeout, caps).map_err(CliError::Guest)?;
    let apps = client.list_apps(true).map_err(CliError::Guest)?;
    let connect_ms = ms(t_start);

    let mut model_load_ms = 0.0;
    let mut intent_ms = 0.0;
    let (app_id, how) = match direct_match(&apps, &words) {
        Some(e) => (e.id.clone(), serde_json::json!({"by": "name"})),
        None => {
            let t_load = Instant::now();
            let opts = SessionOptions {
                model: a.model.clone(),
                store: a.store.root(),
                entries: Some(apps),
                ..SessionOptions::default()
            };
            let session = Session::open(&opts)?;
            model_load_ms = ms(t_load);
            let t_intent = Instant::now();
            let res = session.resolve(&words)?;
            intent_ms = ms(t_intent);
            match res.action {
                Action::Launch { app_id, confidence, .. } => {
                    (app_id, serde_json::json!({"by": "intent", "confidence": confidence}))
                }
                other => {
                    // A request the engine asks back about or refuses launches nothing.
                    if a.json {
                        println!("{}", other.to_json());
                    } else {
                        println!("{}", printable(&describe_non_launch(&other)));
                    }
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };

    let launch = Launch {
        app: AppRef::Id(app_id.clone()),
        args: vec![],
        env: Default::default(),
        cwd: None,
        display: if native { DisplayMode::Native } else { DisplayMode::Embedded },
    };
    let t_launch = Instant::now();
    // Catalog apps only: the default policy allows them and refuses command lines.
    let (handle, pid) = client.launch(&GuestPolicy::default(), launch).map_err(CliError::Guest)?;
    let launch_ms = ms(t_launch);
    if a.json {
        let mut v = serde_json::json!({
            "launched": app_id, "handle": handle, "pid": pid, "native_window": bridged,
            "connect_ms": connect_ms, "model_load_ms": model_load_ms, "intent_ms": intent_ms, "launch_ms": launch_ms,
        });
        v["resolved"] = how;
        println!("{v}");
    } else {
        let shown = if bridged {
            "as a native window"
        } else if native {
            "without a window"
        } else {
            "in the VM's desktop"
        };
        println!(
            "launched {} {shown}: handle {handle}, guest pid {pid} (model load {model_load_ms:.0} ms, intent {intent_ms:.1} ms, launch {launch_ms:.1} ms)",
            printable(&app_id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn describe_non_launch(action: &Action) -> String {
    match action {
        Action::Clarify { candidates, question } => {
            let names: Vec<String> = candidates.iter().map(|c| format!("{} ({})", c.name, c.app_id)).collect();
            format!(
                "{} {}; nothing launched",
                question.as_deref().unwrap_or("Which app did you mean?"),
                names.join(", ")
            )
        }
        Action::None { reason } => {
            format!(
                "nothing to do: {}; nothing launched",
                reason.as_deref().unwrap_or("no app in the guest fits this request")
            )
        }
        other => format!("{}; nothing launched", other.to_json()),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// The guest's hybrid vsock socket (its vsock backend's `--uds-path`);
    /// the bridge listens on `<PATH>_5253`.
    #[arg(long, env = "RAYOS_GUEST_VSOCK", value_name = "PATH")]
    pub vsock: PathBuf,
    /// The VM's name as registered with the compositor: windows go to its
    /// socket `rayos-vm-<NAME>`.
    #[arg(long, value_name = "NAME")]
    pub vm: String,
    /// The compositor's socket folder (default: $XDG_RUNTIME_DIR).
    #[arg(long, value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    /// The guest image's root file system, whose waypipe (the same build as
    /// the guest's) runs here through the image's own loader.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rayos/guest/rootfs")]
    pub guest_root: PathBuf,
    /// Run this waypipe (0.9 or later) instead of the guest root's
    /// (or set $RAYOS_WAYPIPE).
    #[arg(long, value_name = "PATH")]
    pub waypipe: Option<PathBuf>,
    /// waypipe's log (default: standard error).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// `rayos bridge`: run the VM's native-window bridge in the foreground.
pub(super) fn bridge_cmd(a: BridgeArgs) -> Result<ExitCode, CliError> {
    let runtime_dir = match a.socket_dir.clone().or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)) {
        Some(d) => d,
        None => return Err(CliError::Usage("--socket-dir: not given and XDG_RUNTIME_DIR is not set".into())),
    };
    let display = format!("rayos-vm-{}", a.vm);
    if !runtime_dir.join(&display).exists() {
        return Err(CliError::Usage(format!(
            "--vm {}: the compositor has no socket {} (register the VM first)",
            a.vm,
            runtime_dir.join(&display).display()
        )));
    }
    let waypipe =
        Waypipe::resolve(a.waypipe.as_deref(), Some(&a.guest_root)).map_err(|e| CliError::Usage(e.to_string()))?;
    let cfg = BridgeConfig { vsock: a.vsock.clone(), runtime_dir, display };
    let log = a.log.clone().unwrap_or_else(|| PathBuf::from("/dev/stderr"));
    let mut child =
        bridge::spawn(&waypipe, &cfg, &log, Duration::from_secs(10)).map_err(|e| CliError::Target(e.to_string()))?;
    eprintln!(
        "bridge for VM {}: guest apps arrive on {} and show on {}",
        a.vm,
        cfg.listen_path().display(),
        cfg.display
    );
    let status =
        child.wait().map_err(|source| CliError::File { flag: "--waypipe", path: PathBuf::from("waypipe"), source })?;
    let _ = std::fs::remove_file(cfg.listen_path());
    Err(CliError::Target(format!("the bridge's waypipe exited with {status}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayos_contract::DesktopEntry;

    fn entry(id: &str, name: &str) -> DesktopEntry {
        let text = format!("[Desktop Entry]\nType=Application\nName={name}\nExec=true\n");
        rayos_contract::parse_desktop(id, &text).unwrap().unwrap()
    }

    #[test]
    fn names_an_app_by_id_or_name_else_leaves_it_to_the_engine() {
        let apps = [entry("foot.desktop", "Foot"), entry("org.gnome.Calculator.desktop", "Calculator")];
        assert_eq!(direct_match(&apps, "foot.desktop").unwrap().id, "foot.desktop");
        assert_eq!(direct_match(&apps, "foot").unwrap().id, "foot.desktop");
        assert_eq!(direct_match(&apps, "calculator").unwrap().id, "org.gnome.Calculator.desktop");
        assert!(direct_match(&apps, "open a terminal").is_none());
        assert!(direct_match(&apps, "foo").is_none());
    }
}
