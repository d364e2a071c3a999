//! One VM's controller: a task that owns the VM's children and runtime
//! folder and moves it through [`crate::state`]'s machine.
//!
//! Boot: a fresh private folder `<runtime_dir>/vm-<name>`; virtiofsd for the
//! guest root and each shared folder (read-only where the policy says),
//! rayos-vsock, each listening before the VMM is started; the VM registered
//! with the compositor; rayos-vmm on the guest image (kernel, initramfs and
//! command line from its manifest); then a task waits for the agent's
//! `hello` and the VM is `running`; the native-window bridge starts last.
//!
//! Stop: the agent is asked to power off; after the policy's timeout the
//! VMM's process group gets SIGTERM, then SIGKILL; then the backends and the
//! bridge the same way; the VM is unregistered and the runtime folder
//! removed. A dead backend degrades the VM and, by policy, restarts it
//! (rayos-vmm cannot reconnect a vhost-user backend) or stops it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayos_vmm_api::{ExitOutcome, FsDevice, Serial, VhostUserDevice, VmSpec, VIRTIO_ID_VSOCK};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::agent_link::AgentLink;
use crate::child::{Child, ChildSpec, Exited};
use crate::compositor::Compositor;
use crate::events::{Event, Events};
use crate::guest::GuestClient;
use crate::policy::{HostPolicy, VmPolicy};
use crate::runtime;
use crate::state::{self, Action, ChildKind, Input, VmState};

/// How long a backend may take to listen on its socket.
const BACKEND_LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM to SIGKILL for backends and the bridge.
const BACKEND_GRACE: Duration = Duration::from_secs(3);
/// SIGTERM to SIGKILL for the VMM.
const VMM_GRACE: Duration = Duration::from_secs(5);
/// How often a dead bridge is restarted before the VM is left degraded.
const MAX_BRIDGE_RESTARTS: u32 = 5;

/// Programs the service starts.
#[derive(Debug, Clone)]
pub struct Tools {
    pub rayos_vmm: PathBuf,
    pub rayos_vsock: PathBuf,
    pub virtiofsd: PathBuf,
    /// The `rayos` binary whose `bridge` command runs a VM's native-window
    /// bridge; None: no bridge (apps get no window).
    pub bridge: Option<PathBuf>,
}

/// A child as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChildInfo {
    pub name: String,
    pub pid: Option<u32>,
    pub state: &'static str,
    pub restarts: u32,
    pub last_status: Option<String>,
}

/// What the agent said in `hello`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentSummary {
    pub version: u32,
    pub agent: String,
    pub kernel: String,
    pub capabilities: Vec<String>,
}

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    pub colour: String,
    /// Unix time (ms) of the last state change.
    pub since_ms: u64,
    pub boot_to_agent_ms: Option<u64>,
    pub agent: Option<AgentSummary>,
    pub last_exit: Option<String>,
    /// VM restarts after a backend died, since the service started.
    pub restarts: u32,
    pub children: Vec<ChildInfo>,
    /// The guest's hybrid vsock socket while the VM runs.
    pub vsock_socket: Option<PathBuf>,
    /// Whether the native-window bridge runs.
    pub bridge: bool,
    /// How the VM's display reaches the host at its next boot: the policy's
    /// `display` until `POST /v1/vms/{name}/display` changes it (not saved).
    pub display: crate::policy::VmDisplay,
}

/// The answer to `stop`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StopReport {
    pub vm: String,
    pub state: VmState,
    /// How the VMM ended, if it ran.
    pub outcome: Option<ExitOutcome>,
    pub message: String,
    /// The guest powered off when asked, within the timeout.
    pub clean: bool,
}

pub enum Cmd {
    Start { wait: bool, reply: oneshot::Sender<Result<VmInfo, String>> },
    Stop { reply: oneshot::Sender<StopReport> },
    AgentReady { generation: u64, summary: AgentSummary, boot_ms: u64 },
    AgentFailed { generation: u64, why: String },
}

/// The API's handle on a VM.
#[derive(Clone)]
pub struct VmHandle {
    pub policy: Arc<VmPolicy>,
    pub info: Arc<RwLock<VmInfo>>,
    link: Arc<Mutex<Option<AgentLink>>>,
    tx: mpsc::Sender<Cmd>,
}

impl VmHandle {
    pub fn snapshot(&self) -> VmInfo {
        self.info.read().expect("vm info lock").clone()
    }

    /// The connection to the agent, while the VM runs.
    pub fn link(&self) -> Option<AgentLink> {
        self.link.lock().expect("agent link lock").clone()
    }

    pub async fn start(&self, wait: bool) -> Result<VmInfo, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Start { wait, reply }).await.map_err(|_| "the VM's controller is gone".to_string())?;
        rx.await.map_err(|_| "the VM's controller is gone".to_string())?
    }

    /// Sets how the VM's display reaches the host from its next boot on.
    pub fn set_display(&self, display: crate::policy::VmDisplay) {
        self.info.write().expect("vm info lock").display = display;
    }

    pub async fn stop(&self) -> Result<StopReport, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Stop { reply }).await.map_err(|_| "the VM's controller is gone".to_string())?;
        rx.await.map_err(|_| "the VM's controller is gone".to_string())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn kind_of(child: &str) -> ChildKind {
    match child {
        "rayos-vmm" => ChildKind::Vmm,
        "bridge" => ChildKind::Bridge,
        _ => ChildKind::Backend,
    }
}

/// The guest image's manifest (written by `rayos image build`), the parts used here.
#[derive(Debug, serde::Deserialize)]
struct Manifest {
    kernel_cmdline: String,
    vmlinuz: String,
    initramfs: String,
    rootfs: String,
}

/// The guest image's files.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub cmdline: String,
}

impl Image {
    pub fn open(dir: &Path) -> Result<Image, String> {
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath)
            .map_err(|e| format!("guest image {}: {e} (build one with `rayos image build`)", mpath.display()))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| format!("guest image {}: {e}", mpath.display()))?;
        let inside = |name: &str, what: &str| -> Result<PathBuf, String> {
            if name.is_empty() || name.contains('/') || name == ".." {
                return Err(format!("guest image {}: {what} {name:?} is not a file name", mpath.display()));
            }
            let p = dir.join(name);
            if !p.exists() {
                return Err(format!("guest image {}: {what} {} is missing", mpath.display(), p.display()));
            }
            Ok(p)
        };
        Ok(Image {
            kernel: inside(&m.vmlinuz, "vmlinuz")?,
            initramfs: inside(&m.initramfs, "initramfs")?,
            rootfs: inside(&m.rootfs, "rootfs")?,
            cmdline: m.kernel_cmdline,
        })
    }
}

/// The VMM's spec for `vm` booting `image` with its sockets in `rt`; with
/// `display = "desktop"`, its display goes to the compositor's desktop
/// socket for the VM in `compositor_dir`.
pub fn vm_spec(vm: &VmPolicy, image: &Image, rt: &Path, log_dir: &Path, compositor_dir: Option<&Path>) -> VmSpec {
    let mut cmdline = format!("console=ttyS0 {}", image.cmdline);
    for s in &vm.shares {
        cmdline.push_str(&format!(" rayos.share={}:{}", s.tag, s.guest_path));
    }
    cmdline.push_str(" panic=-1");
    let mut spec = VmSpec::new(&image.kernel);
    spec.initramfs = Some(image.initramfs.clone());
    spec.cmdline = cmdline;
    spec.memory_mib = vm.memory_mib;
    spec.cpus = vm.cpus;
    spec.serial = Serial::File(log_dir.join(format!("{}-serial.log", vm.name)));
    spec.metrics = Some(log_dir.join(format!("{}-metrics.json", vm.name)));
    spec.fs.push(FsDevice { tag: "rootfs".into(), socket: rt.join("fs-rootfs.sock") });
    for s in &vm.shares {
        spec.fs.push(FsDevice { tag: s.tag.clone(), socket: rt.join(format!("fs-{}.sock", s.tag)) });
    }
    spec.vhost_user.push(VhostUserDevice {
        virtio_id: VIRTIO_ID_VSOCK,
        socket: rt.join("vhost-vsock.sock"),
        queues: None,
        queue_size: None,
    });
    if vm.display == crate::policy::VmDisplay::Desktop {
        spec.desktop = compositor_dir.map(|d| d.join(format!("rayos-desktop-{}", vm.name)));
    }
    spec
}

/// virtiofsd's arguments for one folder.
pub fn virtiofsd_args(dir: &Path, socket: &Path, readonly: bool, root: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--shared-dir".into(),
        dir.into(),
        "--socket-path".into(),
        socket.into(),
        "--sandbox".into(),
        // chroot needs CAP_SYS_CHROOT; an unprivileged service uses a user namespace.
        if root { "chroot".into() } else { "namespace".into() },
        "--cache".into(),
        "auto".into(),
    ];
    if readonly {
        a.push("--readonly".into());
    }
    a
}

pub struct Controller {
    vm: Arc<VmPolicy>,
    host: Arc<HostPolicy>,
    tools: Arc<Tools>,
    compositor: Option<Arc<Compositor>>,
    events: Events,
    info: Arc<RwLock<VmInfo>>,
    link: Arc<Mutex<Option<AgentLink>>>,
    state: VmState,
    generation: u64,
    children: Vec<Child>,
    restarts: HashMap<String, u32>,
    rt: Option<PathBuf>,
    registered: bool,
    boot_started: Instant,
    agent_task: Option<tokio::task::JoinHandle<()>>,
    start_waiters: Vec<oneshot::Sender<Result<VmInfo, String>>>,
    exits_tx: mpsc::UnboundedSender<Exited>,
    exits_rx: mpsc::UnboundedReceiver<Exited>,
    self_tx: mpsc::Sender<Cmd>,
    vm_restarts: u32,
    last_exit: Option<String>,
    last_outcome: Option<ExitOutcome>,
    /// What went wrong in this boot before the VMM was stopped (kept in `last_exit`).
    cause: Option<String>,
    /// `cause` is a backend that ended cleanly, which is what a backend does
    /// when its frontend (rayos-vmm) goes away first.
    cause_clean_backend: bool,
}

/// Starts a VM's controller task.
pub fn spawn(
    vm: VmPolicy,
    host: Arc<HostPolicy>,
    tools: Arc<Tools>,
    compositor: Option<Arc<Compositor>>,
    events: Events,
) -> (VmHandle, tokio::task::JoinHandle<()>) {
    let vm = Arc::new(vm);
    let info = Arc::new(RwLock::new(VmInfo {
        name: vm.name.clone(),
        state: VmState::Stopped,
        colour: vm.colour.clone(),
        since_ms: now_ms(),
        boot_to_agent_ms: None,
        agent: None,
        last_exit: None,
        restarts: 0,
        children: vec![],
        vsock_socket: None,
        bridge: false,
        display: vm.display,
    }));
    let (tx, rx) = mpsc::channel(64);
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let link = Arc::new(Mutex::new(None));
    let ctl = Controller {
        vm: vm.clone(),
        host,
        tools,
        compositor,
        events,
        info: info.clone(),
        link: link.clone(),
        state: VmState::Stopped,
        generation: 0,
        children: vec![],
        restarts: HashMap::new(),
        rt: None,
        registered: false,
        boot_started: Instant::now(),
        agent_task: None,
        start_waiters: vec![],
        exits_tx,
        exits_rx,
        self_tx: tx.clone(),
        vm_restarts: 0,
        last_exit: None,
        last_outcome: None,
        cause: None,
        cause_clean_backend: false,
    };
    let task = tokio::spawn(ctl.run(rx));
    (VmHandle { policy: vm, info, link, tx }, task)
}

impl Controller {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => {
                        // The service is going away: stop the VM like `stop`.
                        if self.state.is_up() {
                            self.input(Input::Stop, "the service is stopping").await;
                        }
                        return;
                    }
                },
                Some(ex) = self.exits_rx.recv() => self.exited(ex).await,
            }
        }
    }

    fn publish(&self) {
        let mut i = self.info.write().expect("vm info lock");
        if i.state != self.state {
            i.since_ms = now_ms();
        }
        i.state = self.state;
        i.restarts = self.vm_restarts;
        i.last_exit = self.last_exit.clone();
        i.children = self
            .children
            .iter()
            .map(|c| {
                let st = c.status();
                ChildInfo {
                    name: c.name.clone(),
                    pid: if st.is_none() { Some(c.pid) } else { None },
                    state: if st.is_none() { "running" } else { "exited" },
                    restarts: self.restarts.get(&c.name).copied().unwrap_or(0),
                    last_status: st.map(|s| s.to_string()),
                }
            })
            .collect();
        i.bridge = self.children.iter().any(|c| c.name == "bridge" && c.status().is_none());
        i.vsock_socket = if self.state.is_up() { self.rt.as_ref().map(|r| r.join("vsock.sock")) } else { None };
        if !self.state.is_up() {
            i.agent = None;
        }
    }

    fn set_state(&mut self, s: VmState, reason: &str) {
        if s != self.state {
            tracing::info!(vm = %self.vm.name, "{} -> {}: {reason}", self.state.as_str(), s.as_str());
            self.state = s;
            self.publish();
            self.events.send(Event::VmState { vm: self.vm.name.clone(), state: s, reason: reason.to_string() });
        } else {
            self.publish();
        }
    }

    async fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Start { wait, reply } => {
                let (_, action) = state::step(self.state, &Input::Start, self.vm.on_backend_death);
                if let Action::Refuse(why) = action {
                    let _ = reply.send(Err(why.to_string()));
                    return;
                }
                self.input(Input::Start, "start requested").await;
                if wait && self.state == VmState::Starting {
                    self.start_waiters.push(reply);
                } else if self.state == VmState::Failed {
                    let _ = reply.send(Err(self.last_exit.clone().unwrap_or_else(|| "the VM failed to start".into())));
                } else {
                    let _ = reply.send(Ok(self.info.read().expect("vm info lock").clone()));
                }
            }
            Cmd::Stop { reply } => {
                if self.state.is_up() {
                    self.input(Input::Stop, "stop requested").await;
                }
                let clean = matches!(self.last_outcome, Some(ExitOutcome::Poweroff));
                let _ = reply.send(StopReport {
                    vm: self.vm.name.clone(),
                    state: self.state,
                    outcome: self.last_outcome,
                    message: self.last_exit.clone().unwrap_or_else(|| "the VM was not running".into()),
                    clean,
                });
            }
            Cmd::AgentReady { generation, summary, boot_ms } if generation == self.generation => {
                {
                    let mut i = self.info.write().expect("vm info lock");
                    i.boot_to_agent_ms = Some(boot_ms);
                    i.agent = Some(summary.clone());
                }
                self.input(Input::AgentReady, &format!("the agent answered after {boot_ms} ms ({})", summary.kernel))
                    .await;
                self.start_bridge();
                if let Some(rt) = &self.rt {
                    let bridge =
                        self.tools.bridge.is_some() && self.host.compositor_socket_dir.is_some() && self.registered;
                    let link = AgentLink::start(&self.vm.name, rt.join("vsock.sock"), bridge, self.events.clone());
                    *self.link.lock().expect("agent link lock") = Some(link);
                }
                self.publish();
                let info = self.info.read().expect("vm info lock").clone();
                for w in self.start_waiters.drain(..) {
                    let _ = w.send(Ok(info.clone()));
                }
            }
            Cmd::AgentFailed { generation, why } if generation == self.generation => {
                self.last_exit = Some(why.clone());
                self.cause = Some(why.clone());
                self.input(Input::BootFailed, &why).await;
            }
            Cmd::AgentReady { .. } | Cmd::AgentFailed { .. } => {}
        }
    }

    async fn exited(&mut self, ex: Exited) {
        if ex.generation != self.generation {
            return;
        }
        let expected = self.state == VmState::Stopping;
        let kind = kind_of(&ex.name);
        let outcome = (kind == ChildKind::Vmm).then(|| ExitOutcome::from_status(ex.status));
        self.events.send(Event::ChildExited {
            vm: self.vm.name.clone(),
            child: ex.name.clone(),
            status: outcome.map(|o| o.describe()).unwrap_or_else(|| ex.status.to_string()),
            expected,
        });
        if let Some(o) = outcome {
            self.last_outcome = Some(o);
            self.last_exit = Some(o.describe());
        } else if !expected {
            let why = format!("{} exited ({})", ex.name, ex.status);
            self.last_exit = Some(why.clone());
            self.cause = Some(why);
            self.cause_clean_backend = kind == ChildKind::Backend && ex.status.success();
        }
        let clean = outcome.map(|o| o == ExitOutcome::Poweroff).unwrap_or(false);
        let reason =
            format!("{} exited: {}", ex.name, outcome.map(|o| o.describe()).unwrap_or_else(|| ex.status.to_string()));
        self.input(Input::ChildExited { kind, clean }, &reason).await;
    }

    /// Feeds the state machine and carries out its action.
    async fn input(&mut self, input: Input, reason: &str) {
        let (next, action) = state::step(self.state, &input, self.vm.on_backend_death);
        self.set_state(next, reason);
        match action {
            Action::None | Action::Refuse(_) => {}
            Action::Boot => self.boot().await,
            Action::Shutdown => {
                self.shutdown(true).await;
                let failed = !matches!(self.last_outcome, Some(ExitOutcome::Poweroff) | Some(ExitOutcome::Signal(15)));
                self.finish(failed, if failed { "stopped, not cleanly" } else { "stopped" });
            }
            Action::Cleanup => {
                self.shutdown(false).await;
                let failed = !matches!(self.last_outcome, Some(ExitOutcome::Poweroff));
                let why = self.last_exit.clone().unwrap_or_else(|| "stopped".into());
                self.finish(failed, &why);
            }
            Action::RestartVm => {
                self.shutdown(true).await;
                self.vm_restarts += 1;
                self.set_state(VmState::Stopping, "restarting the VM: a backend died");
                self.finish(false, "restarting after a backend died");
                Box::pin(self.input(Input::Start, "restart after a backend died")).await;
            }
            Action::RestartChild => {
                let n = self.restarts.get("bridge").copied().unwrap_or(0);
                if n >= MAX_BRIDGE_RESTARTS {
                    tracing::error!(vm = %self.vm.name, "the bridge died {n} times; the VM stays degraded");
                    return;
                }
                self.children.retain(|c| c.name != "bridge");
                self.start_bridge();
                let restarts = self.restarts.get("bridge").copied().unwrap_or(0);
                self.events.send(Event::ChildRestarted { vm: self.vm.name.clone(), child: "bridge".into(), restarts });
                Box::pin(self.input(Input::ChildRestarted, "the bridge was restarted")).await;
            }
        }
    }

    fn finish(&mut self, failed: bool, why: &str) {
        let (next, _) = state::step(self.state, &Input::CleanedUp { failed }, self.vm.on_backend_death);
        self.set_state(next, why);
        if failed {
            for w in self.start_waiters.drain(..) {
                let _ = w.send(Err(why.to_string()));
            }
        }
    }

    fn start_child(&mut self, spec: ChildSpec) -> Result<(), String> {
        let c =
            Child::spawn(&self.vm.name, &spec, self.generation, self.exits_tx.clone()).map_err(|e| e.to_string())?;
        self.children.push(c);
        self.publish();
        Ok(())
    }

    async fn boot(&mut self) {
        self.generation += 1;
        self.boot_started = Instant::now();
        self.last_outcome = None;
        self.cause = None;
        self.cause_clean_backend = false;
        self.info.write().expect("vm info lock").boot_to_agent_ms = None;
        if let Err(why) = self.boot_backends_and_vmm().await {
            tracing::error!(vm = %self.vm.name, "boot failed: {why}");
            self.last_exit = Some(why.clone());
            self.cause = Some(why.clone());
            self.set_state(VmState::Stopping, &why);
            self.shutdown(false).await;
            self.finish(true, &why);
            return;
        }
        let generation = self.generation;
        let vsock = self.rt.as_ref().expect("runtime folder").join("vsock.sock");
        let timeout = Duration::from_secs(self.host.agent_timeout_s);
        let tx = self.self_tx.clone();
        let started = self.boot_started;
        self.agent_task = Some(tokio::spawn(async move {
            let cmd = match wait_for_agent(vsock, started, timeout).await {
                Ok(summary) => Cmd::AgentReady { generation, summary, boot_ms: started.elapsed().as_millis() as u64 },
                Err(why) => Cmd::AgentFailed { generation, why },
            };
            let _ = tx.send(cmd).await;
        }));
    }

    async fn boot_backends_and_vmm(&mut self) -> Result<(), String> {
        let image = Image::open(&self.vm.image)?;
        runtime::ensure_private_dir(&self.host.log_dir, 0o750).map_err(|e| e.to_string())?;
        let rt = self.host.runtime_dir.join(format!("vm-{}", self.vm.name));
        runtime::fresh_private_dir(&rt).map_err(|e| e.to_string())?;
        self.rt = Some(rt.clone());
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut sockets = vec![];
        let mut folders: Vec<(String, PathBuf, bool)> = vec![("rootfs".into(), image.rootfs.clone(), false)];
        folders.extend(self.vm.shares.iter().map(|s| (s.tag.clone(), s.path.clone(), s.readonly)));
        for (tag, dir, ro) in folders {
            let sock = rt.join(format!("fs-{tag}.sock"));
            self.start_child(ChildSpec {
                name: format!("virtiofsd-{tag}"),
                program: self.tools.virtiofsd.clone(),
                args: virtiofsd_args(&dir, &sock, ro, root),
                env: vec![],
            })?;
            sockets.push(sock);
        }
        let vhost = rt.join("vhost-vsock.sock");
        self.start_child(ChildSpec {
            name: "rayos-vsock".into(),
            program: self.tools.rayos_vsock.clone(),
            args: vec![
                "--socket".into(),
                vhost.clone().into(),
                "--uds-path".into(),
                rt.join("vsock.sock").into(),
                "--guest-cid".into(),
                "3".into(),
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
        })?;
        sockets.push(vhost);
        self.wait_listening(&sockets).await?;

        if let Some(c) = &self.compositor {
            match c.register(&self.vm.name, &self.vm.colour, &self.vm.clipboard).await {
                Ok(()) => self.registered = true,
                Err(e) => {
                    tracing::warn!(vm = %self.vm.name, "not registered with the compositor (apps will have no window): {e}")
                }
            }
        }

        let mut vm = (*self.vm).clone();
        vm.display = self.info.read().expect("vm info lock").display;
        let spec = vm_spec(&vm, &image, &rt, &self.host.log_dir, self.host.compositor_socket_dir.as_deref());
        let argv = spec.to_argv().map_err(|e| format!("VM {}: {e}", self.vm.name))?;
        self.start_child(ChildSpec {
            name: "rayos-vmm".into(),
            program: self.tools.rayos_vmm.clone(),
            args: argv,
            env: vec![("RUST_LOG".into(), "rayos_vmm=info".into())],
        })?;
        Ok(())
    }

    /// Waits until every backend's socket file exists (they create it when
    /// they listen; a probing connection would be taken by virtiofsd as its
    /// one frontend), or a backend dies.
    async fn wait_listening(&mut self, sockets: &[PathBuf]) -> Result<(), String> {
        let deadline = Instant::now() + BACKEND_LISTEN_TIMEOUT;
        for s in sockets {
            loop {
                if s.exists() {
                    break;
                }
                if let Some(c) = self.children.iter().find(|c| c.status().is_some()) {
                    return Err(format!(
                        "{} exited ({}) before listening on {}",
                        c.name,
                        c.status().expect("exited"),
                        s.display()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("no backend listened on {} within {BACKEND_LISTEN_TIMEOUT:?}", s.display()));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }

    fn start_bridge(&mut self) {
        let (Some(bridge), Some(dir), true) = (&self.tools.bridge, &self.host.compositor_socket_dir, self.registered)
        else {
            return;
        };
        let Some(rt) = &self.rt else { return };
        let Ok(image) = Image::open(&self.vm.image) else { return };
        let spec = ChildSpec {
            name: "bridge".into(),
            program: bridge.clone(),
            args: vec![
                "bridge".into(),
                "--vsock".into(),
                rt.join("vsock.sock").into(),
                "--vm".into(),
                self.vm.name.clone().into(),
                "--socket-dir".into(),
                dir.into(),
                "--guest-root".into(),
                image.rootfs.into(),
            ],
            env: vec![],
        };
        let had = self.children.iter().any(|c| c.name == "bridge");
        match self.start_child(spec) {
            Ok(()) if had || self.restarts.contains_key("bridge") => {
                *self.restarts.entry("bridge".into()).or_default() += 1
            }
            Ok(()) => {
                self.restarts.insert("bridge".into(), 0);
            }
            Err(e) => tracing::error!(vm = %self.vm.name, "cannot start the bridge: {e}"),
        }
    }

    /// Stops everything of this VM. `graceful`: ask the agent to power off first.
    async fn shutdown(&mut self, graceful: bool) {
        if let Some(t) = self.agent_task.take() {
            t.abort();
        }
        let link = self.link.lock().expect("agent link lock").take();
        let vmm_running = self.children.iter().any(|c| c.name == "rayos-vmm" && c.status().is_none());
        if vmm_running {
            let mut asked = false;
            if graceful {
                if let Some(rt) = &self.rt {
                    let vsock = rt.join("vsock.sock");
                    let r = tokio::task::spawn_blocking(move || match link {
                        Some(l) => l.power(false).map_err(|e| e.to_string()),
                        None => GuestClient::connect(&vsock, rayos_contract::AGENT_PORT, Duration::from_secs(3))
                            .and_then(|mut c| c.power(false))
                            .map_err(|e| e.to_string()),
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => asked = true,
                        Ok(Err(e)) => {
                            tracing::warn!(vm = %self.vm.name, "the agent cannot power the guest off ({e}): stopping the VMM")
                        }
                        Err(e) => tracing::warn!(vm = %self.vm.name, "asking the agent failed: {e}"),
                    }
                }
            }
            let vmm = self.children.iter().find(|c| c.name == "rayos-vmm").expect("vmm child");
            let status = if asked { vmm.wait(Duration::from_secs(self.host.stop_timeout_s)).await } else { None };
            let status = match status {
                Some(s) => Some(s),
                None => {
                    if asked {
                        tracing::warn!(vm = %self.vm.name, "the guest did not power off within {} s: SIGTERM", self.host.stop_timeout_s);
                    }
                    vmm.terminate(VMM_GRACE).await
                }
            };
            if let Some(s) = status {
                let o = ExitOutcome::from_status(s);
                self.last_outcome = Some(o);
                self.last_exit = Some(exit_story(self.cause.as_deref(), self.cause_clean_backend, o));
            }
        }
        // The bridge first (it talks to the guest), then the backends.
        let mut order: Vec<usize> = (0..self.children.len()).collect();
        order.sort_by_key(|&i| match kind_of(&self.children[i].name) {
            ChildKind::Bridge => 0,
            ChildKind::Vmm => 1,
            ChildKind::Backend => 2,
        });
        for i in order {
            self.children[i].terminate(BACKEND_GRACE).await;
        }
        // Reports of these exits belong to this generation; drop them.
        self.generation += 1;
        self.children.clear();
        if self.registered {
            if let Some(c) = &self.compositor {
                if let Err(e) = c.unregister(&self.vm.name).await {
                    tracing::warn!(vm = %self.vm.name, "unregistering from the compositor: {e}");
                }
            }
            self.registered = false;
        }
        if let Some(rt) = self.rt.take() {
            if let Err(e) = std::fs::remove_dir_all(&rt) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(vm = %self.vm.name, "cannot remove {}: {e}", rt.display());
                }
            }
        }
        self.publish();
    }
}

/// How a boot ended, for `last_exit`: what went wrong first, then how the
/// VMM ended. A backend that ended cleanly just before a guest crash ended
/// because the crash took its frontend away: the crash comes first.
pub fn exit_story(cause: Option<&str>, cause_clean_backend: bool, o: ExitOutcome) -> String {
    match cause {
        Some(c) if cause_clean_backend && o.is_guest_crash() => format!("{}; {c} with it", o.describe()),
        Some(c) => format!("{c}; then {}", o.describe()),
        None => o.describe(),
    }
}

/// Polls the agent until its `hello` and a ping answer, or `timeout`.
async fn wait_for_agent(vsock: PathBuf, started: Instant, timeout: Duration) -> Result<AgentSummary, String> {
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        let path = vsock.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut c = GuestClient::connect(&path, rayos_contract::AGENT_PORT, Duration::from_secs(5))?;
            c.ping(1)?;
            Ok::<_, crate::guest::ClientError>(c.info.clone())
        })
        .await;
        match r {
            Ok(Ok(info)) => {
                return Ok(AgentSummary {
                    version: info.version,
                    agent: info.agent,
                    kernel: info.kernel,
                    capabilities: info.capabilities,
                })
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("the guest agent did not answer within {} s (last: {last})", timeout.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Machine, Policy};

    #[test]
    fn a_guest_crash_is_named_before_the_backend_it_took_down() {
        let crash = exit_story(Some("rayos-vsock exited (exit status: 0)"), true, ExitOutcome::TripleFault);
        assert_eq!(crash, "the guest triple-faulted (status 4); rayos-vsock exited (exit status: 0) with it");
        let killed = exit_story(Some("rayos-vsock exited (signal: 9 (SIGKILL))"), false, ExitOutcome::Signal(15));
        assert!(killed.starts_with("rayos-vsock exited (signal: 9 (SIGKILL)); then "), "{killed}");
        assert_eq!(exit_story(None, false, ExitOutcome::Poweroff), "the guest powered off");
    }

    #[test]
    fn the_spec_carries_the_image_shares_and_sockets() {
        let root = tempfile::tempdir().unwrap();
        let policy = Policy::parse_str(
            None,
            &format!(
                "[host]\nshares_root = \"{0}\"\n[vm.linux]\nmemory = \"1G\"\ncpus = 2\n[[vm.linux.share]]\ntag = \"out\"\npath = \"{0}\"\nguest_path = \"/mnt/out\"\n",
                root.path().display()
            ),
            &Machine { cpus: 2, memory_mib: 4096, runtime_dir: "/run/rayos".into() },
        )
        .unwrap();
        let image = Image {
            kernel: "/img/vmlinuz".into(),
            initramfs: "/img/initramfs.cpio.gz".into(),
            rootfs: "/img/rootfs".into(),
            cmdline: "rayos.root=rootfs".into(),
        };
        let s = vm_spec(&policy.vms[0], &image, Path::new("/run/rayos/vm-linux"), Path::new("/var/log/rayos"), None);
        assert_eq!(s.cmdline, "console=ttyS0 rayos.root=rootfs rayos.share=out:/mnt/out panic=-1");
        assert_eq!(s.fs.len(), 2);
        assert_eq!(s.fs[1].socket, Path::new("/run/rayos/vm-linux/fs-out.sock"));
        assert_eq!(s.vhost_user[0].virtio_id, VIRTIO_ID_VSOCK);
        assert_eq!((s.memory_mib, s.cpus), (1024, 2));
        assert!(!s.to_argv().unwrap().contains(&"--gpu".into()), "no display by default");
        // display = "desktop": a GPU shown on the compositor's desktop socket for the VM.
        let mut desk = policy.vms[0].clone();
        desk.display = crate::policy::VmDisplay::Desktop;
        let d =
            vm_spec(&desk, &image, Path::new("/run/rayos/vm-linux"), Path::new("/l"), Some(Path::new("/run/rayos")));
        let argv = d.to_argv().unwrap();
        assert!(argv.windows(2).any(|w| w[0] == "--gpu" && w[1] == "wayland=/run/rayos/rayos-desktop-linux"));
    }

    #[test]
    fn virtiofsd_is_read_only_where_the_policy_says() {
        let a = virtiofsd_args(Path::new("/srv/x"), Path::new("/run/s"), true, false);
        assert!(a.contains(&"--readonly".into()));
        assert!(a.windows(2).any(|w| w[0] == "--sandbox" && w[1] == "namespace"));
        assert!(!virtiofsd_args(Path::new("/srv/x"), Path::new("/run/s"), false, true).contains(&"--readonly".into()));
    }

    #[test]
    fn a_broken_image_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert!(Image::open(d.path()).unwrap_err().contains("manifest.json"));
        std::fs::write(
            d.path().join("manifest.json"),
            r#"{"kernel_cmdline":"x","vmlinuz":"../vmlinuz","initramfs":"i","rootfs":"r"}"#,
        )
        .unwrap();
        assert!(Image::open(d.path()).unwrap_err().contains("not a file name"));
        std::fs::write(
            d.path().join("manifest.json"),
            r#"{"kernel_cmdline":"x","vmlinuz":"vmlinuz","initramfs":"i","rootfs":"r"}"#,
        )
        .unwrap();
        assert!(Image::open(d.path()).unwrap_err().contains("is missing"));
    }
}
