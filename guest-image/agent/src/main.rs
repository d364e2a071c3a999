//! `rayos-guest-agent`: thin binary over the agent library.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use rayos_guest_agent::catalog::xdg_dirs;
use rayos_guest_agent::launcher::{Launcher, RunAs};
use rayos_guest_agent::server::{Agent, Listener, Power};
use rayos_guest_agent::supervisor;

/// The RayOS guest agent: serves the host's command channel (list apps,
/// launch, stop, power) on vsock inside the Linux guest.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// vsock port to listen on.
    #[arg(long, default_value_t = rayos_contract::AGENT_PORT)]
    port: u32,
    /// Listen on this unix socket instead of vsock (for tests on a host).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Unprivileged user that apps run as. Without it apps run as the
    /// agent's own user (allowed only when the agent is not root).
    #[arg(long)]
    user: Option<String>,
    /// Application folders to read the catalog from, in priority order
    /// (default: $XDG_DATA_DIRS/applications, else /usr/local/share and /usr/share).
    #[arg(long = "apps-dir", value_name = "DIR")]
    apps_dirs: Vec<PathBuf>,
    /// WAYLAND_DISPLAY for apps shown inside the VM's desktop.
    #[arg(long, default_value = "wayland-0")]
    embedded_display: String,
    /// WAYLAND_DISPLAY for apps shown as native host windows when the host
    /// serves no bridge.
    #[arg(long, default_value = "wayland-native")]
    native_display: String,
    /// The native-window bridge program (waypipe 0.9 with --vsock). When it
    /// exists and the host announces the bridge, `display: native` apps run
    /// behind it, each toplevel a host window.
    #[arg(long, default_value = "/usr/bin/waypipe", value_name = "PATH")]
    waypipe: PathBuf,
    /// Run the agent under a supervisor that starts it again when it dies
    /// (always on as PID 1, where the agent's death would end the guest).
    #[arg(long)]
    supervise: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RAYOS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if (std::process::id() == 1 || args.supervise) && !supervisor::is_supervised() {
        // Returns in the agent child only (see `supervisor`).
        supervisor::supervise();
    }
    if let Err(e) = run(args) {
        eprintln!("rayos-guest-agent: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let pid1 = std::process::id() == 1 || supervisor::is_pid1_child();
    let run_as = match &args.user {
        Some(u) => RunAs::lookup(u).map_err(|e| format!("--user {u}: {e}"))?,
        None => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                return Err("running as root: pass --user NAME so apps do not run as root".into());
            }
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            let mut ra = RunAs::lookup(&user).unwrap_or_else(|_| RunAs {
                uid: None,
                gid: None,
                groups: Vec::new(),
                user: user.clone(),
                home: std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into()),
                shell: "/bin/sh".into(),
                runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(|| "/tmp".into()),
                embedded_display: String::new(),
                native_display: String::new(),
                path: "/usr/local/bin:/usr/bin:/bin".into(),
                bridge: None,
            });
            ra.uid = None;
            ra.gid = None;
            ra
        }
    };
    let bridge = args.waypipe.is_file().then(|| args.waypipe.clone());
    if bridge.is_none() {
        tracing::info!("no bridge program at {}: native apps get no host windows", args.waypipe.display());
    }
    let run_as =
        RunAs { embedded_display: args.embedded_display, native_display: args.native_display, bridge, ..run_as };
    let dirs = if args.apps_dirs.is_empty() {
        xdg_dirs(None, std::env::var("XDG_DATA_DIRS").ok().as_deref())
    } else {
        args.apps_dirs
    };
    let agent = Agent::new(dirs, if pid1 { Power::Allowed } else { Power::Refused });
    let sink_agent = Arc::downgrade(&agent);
    let launcher = Launcher::start(
        run_as,
        Arc::new(move |msg| {
            if let Some(a) = sink_agent.upgrade() {
                a.event(msg)
            }
        }),
    );
    agent.set_launcher(launcher);
    if pid1 {
        agent.set_desktop(rayos_guest_agent::desktop::Desktop::default());
    }
    let (listener, where_) = match args.unix {
        Some(p) => (Listener::unix(p.clone()).map_err(|e| e.to_string())?, format!("unix socket {}", p.display())),
        None => (Listener::vsock(args.port).map_err(|e| e.to_string())?, format!("vsock port {}", args.port)),
    };
    eprintln!("RAYOS-AGENT-READY {where_}");
    agent.serve(listener).map_err(|e| e.to_string())
}
