//! rayosd: the RayOS host service.
//!
//! RayOS owns its Linux guests. This crate is the service that does so: it
//! reads the host's policy ([`policy`]), runs each VM's VMM and backends as
//! supervised child processes ([`child`], [`vm`], whose life is the pure
//! machine in [`state`]), registers the VMs with the compositor
//! ([`compositor`]), launches apps under the policy ([`launch`]) and serves
//! the control API ([`api`]) that the `rayos` CLI uses ([`client`]).
//!
//! Like Cloud Hypervisor and niri, it talks to each part through a small
//! typed interface crate (rayos-vmm-api for the VMM, rayos-contract for the
//! agent, rayos-compositor-ipc for the compositor) and runs the VMM and every
//! backend as a child process; it links no KVM, Smithay or model code. The intent engine comes in through
//! [`launch::IntentResolver`], supplied by the `rayos` binary.

pub mod agent_link;
pub mod api;
pub mod child;
pub mod client;
pub mod compositor;
pub mod events;
pub mod guest;
pub mod launch;
pub mod policy;
pub mod runtime;
pub mod state;
pub mod vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UnixListener;

use crate::compositor::Compositor;
use crate::events::Events;
use crate::launch::IntentResolver;
use crate::policy::Policy;
use crate::vm::{Tools, VmHandle};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("{tool} not found: {hint}")]
    Tool { tool: &'static str, hint: String },
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
}

/// The running service's shared state.
pub struct Service {
    pub policy: Policy,
    pub vms: Vec<VmHandle>,
    pub events: Events,
    pub resolver: Option<Arc<dyn IntentResolver>>,
    pub compositor: Option<Arc<Compositor>>,
    pub started: Instant,
    pub own_uid: u32,
    pub group_gid: Option<u32>,
}

impl Service {
    pub fn vm(&self, name: &str) -> Option<&VmHandle> {
        self.vms.iter().find(|h| h.policy.name == name)
    }
}

/// Finds a program: the policy's path, else beside this executable, else
/// `PATH`, else extra places.
pub fn find_tool(tool: &'static str, configured: Option<&Path>, extra: &[PathBuf]) -> Result<PathBuf, ServiceError> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ServiceError::Tool { tool, hint: format!("{} (from the policy) does not exist", p.display()) })
        };
    }
    let mut candidates = vec![];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(tool));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(tool)));
    }
    candidates.extend(extra.iter().cloned());
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| ServiceError::Tool {
        tool,
        hint: format!("set host.{} in the policy, or put it on PATH", tool.replace('-', "_")),
    })
}

/// The tools the policy names or that are found on this machine.
pub fn find_tools(policy: &Policy, bridge: Option<PathBuf>) -> Result<Tools, ServiceError> {
    let h = &policy.host;
    let cache = std::env::var_os("RAYOS_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rayos")));
    let mut virtiofsd_extra = vec![PathBuf::from("/usr/libexec/virtiofsd")];
    if let Some(c) = cache {
        virtiofsd_extra.push(c.join("tools/bin/virtiofsd"));
    }
    Ok(Tools {
        rayos_vmm: find_tool("rayos-vmm", h.rayos_vmm.as_deref(), &[])?,
        rayos_vsock: find_tool("rayos-vsock", h.rayos_vsock.as_deref(), &[])?,
        virtiofsd: find_tool("virtiofsd", h.virtiofsd.as_deref(), &virtiofsd_extra)?,
        bridge,
    })
}

/// What the service runs with.
pub struct ServiceOptions {
    pub policy: Policy,
    pub tools: Tools,
    pub resolver: Option<Arc<dyn IntentResolver>>,
    /// Start the VMs the policy marks `autostart`.
    pub autostart: bool,
}

/// A started service: the API is listening.
pub struct Running {
    pub service: Arc<Service>,
    pub socket: PathBuf,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    controllers: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the control socket, starts each VM's controller and the API.
pub async fn start(opts: ServiceOptions) -> Result<Running, ServiceError> {
    let policy = opts.policy;
    let host = Arc::new(policy.host.clone());
    let group_gid = match &host.group {
        Some(g) => Some(runtime::group_gid(g)?),
        None => None,
    };
    runtime::ensure_private_dir(&host.runtime_dir, if group_gid.is_some() { 0o750 } else { 0o700 })?;
    if let Some(gid) = group_gid {
        // The group may reach the socket inside; it cannot write the folder.
        let c = std::ffi::CString::new(host.runtime_dir.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
        // SAFETY: chown on a NUL-terminated path of our own folder.
        unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) };
    }
    runtime::clear_stale_socket(&host.socket)?;
    let listener =
        UnixListener::bind(&host.socket).map_err(|source| ServiceError::Bind { path: host.socket.clone(), source })?;
    runtime::restrict_socket(&host.socket, group_gid)?;

    let events = Events::default();
    let compositor = host.compositor.clone().map(|p| Arc::new(Compositor::new(p)));
    if let Some(c) = &compositor {
        c.clone().forward_events(events.clone());
    }
    let tools = Arc::new(opts.tools);
    let mut vms = vec![];
    let mut controllers = vec![];
    for vm in &policy.vms {
        let (h, task) = vm::spawn(vm.clone(), host.clone(), tools.clone(), compositor.clone(), events.clone());
        vms.push(h);
        controllers.push(task);
    }
    let service = Arc::new(Service {
        policy,
        vms,
        events,
        resolver: opts.resolver,
        compositor,
        started: Instant::now(),
        // SAFETY: geteuid cannot fail.
        own_uid: unsafe { libc::geteuid() },
        group_gid,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(service.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    tracing::info!("rayos host: listening on {}", host.socket.display());
    if opts.autostart {
        for h in &service.vms {
            if h.policy.autostart {
                if let Err(e) = h.start(false).await {
                    tracing::error!(vm = %h.policy.name, "autostart: {e}");
                }
            }
        }
    }
    Ok(Running { service, socket: host.socket.clone(), server, stop_tx, controllers })
}

impl Running {
    /// Stops every VM (as `stop` does), then the API, and removes the socket.
    pub async fn shutdown(self) {
        for h in &self.service.vms {
            if h.snapshot().state.is_up() {
                match h.stop().await {
                    Ok(r) => tracing::info!(vm = %r.vm, "stopped: {}", r.message),
                    Err(e) => tracing::error!(vm = %h.policy.name, "stop: {e}"),
                }
            }
        }
        let _ = self.stop_tx.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.server).await;
        for c in self.controllers {
            c.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs the service until SIGTERM or SIGINT, then stops every VM cleanly.
pub async fn run(opts: ServiceOptions) -> Result<(), ServiceError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Serve)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Serve)?;
    let running = start(opts).await?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping every VM"),
        _ = int.recv() => tracing::info!("SIGINT: stopping every VM"),
    }
    running.shutdown().await;
    Ok(())
}
