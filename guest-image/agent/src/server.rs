//! The command channel's guest end: accept host connections, read requests,
//! answer each with one reply, forward events.
//!
//! One host connection is served at a time. A new connection supersedes the
//! old one (the host reconnecting after a restart must not be locked out by
//! a dead socket): the old one gets `Error { code: superseded }` and is
//! closed. Events (app exits, output lines) go to the current negotiated
//! connection; while none is, up to [`MAX_QUEUED_EVENTS`] wait for the next
//! `Hello` (older ones are dropped and the drop is logged).
//!
//! A frame that is not a valid request gets an `Error` reply (with the
//! request's id when one was readable) and the connection keeps serving; an
//! oversize frame's bytes are skipped without being buffered. Only a
//! connection that ends mid-frame or fails to read is closed. Writes time out
//! after [`WRITE_TIMEOUT`], so a host that stops reading cannot stall the
//! agent.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayos_contract::frame::{FrameError, FrameReader};
use rayos_contract::{
    decode_request, encode, expand_exec, version, AgentMessage, AppRef, DisplayMode, ErrorCode, HostRequest, Launch,
    Reply, CAP_WAYLAND_BRIDGE,
};

use crate::catalog::Catalog;
use crate::desktop::{wait_for_display, BeforeLaunch, Desktop, Session};

/// How long after boot the agent watches for a DRM card to run the desktop on.
const DESKTOP_CARD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long an embedded launch waits for a desktop session start in
/// progress before it replies (the app then waits for weston itself).
const DESKTOP_LAUNCH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
use crate::launcher::{bridged_argv, LaunchError, Launcher};

pub const MAX_QUEUED_EVENTS: usize = 256;
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on vsock port {port}: {source} (is vmw_vsock_virtio_transport loaded?)")]
    BindVsock { port: u32, source: std::io::Error },
    #[error("cannot listen on {path}: {source}")]
    BindUnix { path: PathBuf, source: std::io::Error },
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

/// A host connection, over vsock in the guest or a unix socket in tests.
pub trait Conn: Read + Write + Send + 'static {
    fn clone_conn(&self) -> std::io::Result<Box<dyn Conn>>;
    fn close(&self);
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl Conn for UnixStream {
    fn clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, Some(t))
    }
}

impl Conn for vsock::VsockStream {
    fn clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn set_write_timeout(&self, t: Duration) -> std::io::Result<()> {
        vsock::VsockStream::set_write_timeout(self, Some(t))
    }
}

/// Where the agent listens.
pub enum Listener {
    Vsock(vsock::VsockListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn vsock(port: u32) -> Result<Self, ServerError> {
        vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, port)
            .map(Listener::Vsock)
            .map_err(|source| ServerError::BindVsock { port, source })
    }

    pub fn unix(path: PathBuf) -> Result<Self, ServerError> {
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path).map(Listener::Unix).map_err(|source| ServerError::BindUnix { path, source })
    }

    fn accept(&self) -> std::io::Result<Box<dyn Conn>> {
        match self {
            Listener::Vsock(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            Listener::Unix(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        }
    }
}

/// What `Shutdown` and `Reboot` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// The agent is PID 1: stop apps, sync, and power off or restart.
    Allowed,
    /// Refuse (the agent is not the guest's init, e.g. in tests).
    Refused,
}

type Writer = Arc<Mutex<Box<dyn Conn>>>;

struct Slot {
    id: u64,
    writer: Writer,
    negotiated: bool,
    /// The host said in `hello` that it serves the native-window bridge.
    host_bridge: bool,
}

/// The agent's shared state.
pub struct Agent {
    catalog_dirs: Vec<PathBuf>,
    launcher: Mutex<Option<Arc<Launcher>>>,
    /// The guest's desktop session, when the agent runs it.
    desktop: Mutex<Option<Arc<Session>>>,
    current: Mutex<Option<Slot>>,
    queued: Mutex<(VecDeque<Reply>, u64)>,
    next_conn: AtomicU64,
    power: Power,
    kernel: String,
}

impl Agent {
    pub fn new(catalog_dirs: Vec<PathBuf>, power: Power) -> Arc<Agent> {
        Arc::new(Agent {
            catalog_dirs,
            launcher: Mutex::new(None),
            desktop: Mutex::new(None),
            current: Mutex::new(None),
            queued: Mutex::new((VecDeque::new(), 0)),
            next_conn: AtomicU64::new(1),
            power,
            kernel: kernel_release(),
        })
    }

    pub fn set_launcher(&self, l: Arc<Launcher>) {
        *self.launcher.lock().expect("launcher slot") = Some(l);
    }

    /// Runs the guest's desktop session (see [`crate::desktop`]): started
    /// once the guest has a DRM card, and again by embedded launches.
    pub fn set_desktop(&self, d: Desktop) {
        let session = Session::new(d);
        session.start_when_card_appears(self.launcher(), DESKTOP_CARD_WAIT);
        *self.desktop.lock().expect("desktop slot") = Some(session);
    }

    fn launcher(&self) -> Arc<Launcher> {
        self.launcher.lock().expect("launcher slot").clone().expect("launcher set before serving")
    }

    /// Deliver an event to the current host, or queue it.
    pub fn event(&self, msg: AgentMessage) {
        let reply = Reply::event(msg);
        let cur = self.current.lock().expect("current connection");
        if let Some(slot) = cur.as_ref().filter(|s| s.negotiated) {
            let writer = slot.writer.clone();
            drop(cur);
            if send(&writer, &reply).is_err() {
                writer.lock().expect("writer").close();
            }
            return;
        }
        drop(cur);
        let mut q = self.queued.lock().expect("event queue");
        if q.0.len() == MAX_QUEUED_EVENTS {
            q.0.pop_front();
            q.1 += 1;
        }
        q.0.push_back(reply);
    }

    /// Serve connections forever.
    pub fn serve(self: &Arc<Self>, listener: Listener) -> Result<(), ServerError> {
        loop {
            let conn = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ServerError::Accept(e)),
            };
            if let Err(e) = self.clone().adopt(conn) {
                tracing::warn!("dropping a host connection: {e}");
            }
        }
    }

    /// Make `conn` the current connection and serve it on its own thread.
    fn adopt(self: Arc<Self>, conn: Box<dyn Conn>) -> std::io::Result<()> {
        conn.set_write_timeout(WRITE_TIMEOUT)?;
        let reader = conn.clone_conn()?;
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let writer: Writer = Arc::new(Mutex::new(conn));
        let old = self.current.lock().expect("current connection").replace(Slot {
            id,
            writer: writer.clone(),
            negotiated: false,
            host_bridge: false,
        });
        if let Some(old) = old {
            tracing::info!(old = old.id, new = id, "a new host connection supersedes the old one");
            let _ = send(
                &old.writer,
                &Reply::error(None, ErrorCode::Superseded, "a newer host connection replaced this one"),
            );
            old.writer.lock().expect("writer").close();
        }
        tracing::info!(conn = id, "host connected");
        std::thread::Builder::new().name(format!("conn{id}")).spawn(move || {
            self.connection(id, reader, writer);
        })?;
        Ok(())
    }

    fn connection(self: Arc<Self>, id: u64, reader: Box<dyn Conn>, writer: Writer) {
        let mut frames = FrameReader::new(reader);
        loop {
            let payload = match frames.read_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) if e.recoverable() => {
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::Malformed,
                    };
                    tracing::warn!(conn = id, "bad frame: {e}");
                    if send(&writer, &Reply::error(None, code, e.to_string())).is_err() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(conn = id, "closing: {e}");
                    break;
                }
            };
            let reply = match decode_request(&payload) {
                Ok(req) => self.handle(id, req.id, req.body),
                Err(e) => {
                    tracing::warn!(conn = id, "bad request: {e}");
                    Reply::error(e.id, e.code, e.message)
                }
            };
            let after = matches!(&reply.body, AgentMessage::Hello { .. });
            if send(&writer, &reply).is_err() {
                break;
            }
            if after {
                self.flush_queued(id);
            }
        }
        writer.lock().expect("writer").close();
        let mut cur = self.current.lock().expect("current connection");
        if cur.as_ref().is_some_and(|s| s.id == id) {
            *cur = None;
        }
        tracing::info!(conn = id, "host disconnected");
    }

    fn flush_queued(&self, conn: u64) {
        let (events, dropped) = {
            let mut q = self.queued.lock().expect("event queue");
            (std::mem::take(&mut q.0), std::mem::take(&mut q.1))
        };
        let writer = {
            let cur = self.current.lock().expect("current connection");
            match cur.as_ref().filter(|s| s.id == conn) {
                Some(s) => s.writer.clone(),
                None => return,
            }
        };
        if dropped > 0 {
            let _ = send(
                &writer,
                &Reply::event(AgentMessage::Log {
                    level: rayos_contract::LogLevel::Warn,
                    line: format!("{dropped} events were dropped while no host was connected"),
                }),
            );
        }
        for e in events {
            if send(&writer, &e).is_err() {
                break;
            }
        }
    }

    fn negotiated(&self, conn: u64) -> bool {
        self.current.lock().expect("current connection").as_ref().is_some_and(|s| s.id == conn && s.negotiated)
    }

    fn handle(self: &Arc<Self>, conn: u64, id: u64, req: HostRequest) -> Reply {
        if !matches!(req, HostRequest::Hello { .. }) && !self.negotiated(conn) {
            return Reply::error(Some(id), ErrorCode::NotNegotiated, "send hello first");
        }
        let body = match req {
            HostRequest::Hello { min_version, max_version, capabilities } => {
                match version::negotiate(min_version, max_version) {
                    Ok(v) => {
                        let can_bridge = self.launcher().run_as().bridge.is_some();
                        let host_bridge = capabilities.iter().any(|c| c == CAP_WAYLAND_BRIDGE);
                        if let Some(s) =
                            self.current.lock().expect("current connection").as_mut().filter(|s| s.id == conn)
                        {
                            s.negotiated = true;
                            s.host_bridge = host_bridge;
                        }
                        if host_bridge && !can_bridge {
                            tracing::warn!(
                                conn,
                                "the host serves the native-window bridge, but this guest has no bridge program"
                            );
                        }
                        let mut caps: Vec<String> =
                            ["list_apps", "launch", "stop", "power", "logs"].map(String::from).to_vec();
                        if can_bridge {
                            caps.push(CAP_WAYLAND_BRIDGE.to_string());
                        }
                        AgentMessage::Hello {
                            version: v,
                            capabilities: caps,
                            agent: concat!("rayos-guest-agent ", env!("CARGO_PKG_VERSION")).to_string(),
                            kernel: self.kernel.clone(),
                        }
                    }
                    Err(e) => return Reply::error(Some(id), ErrorCode::Version, e.to_string()),
                }
            }
            HostRequest::Ping { nonce } => AgentMessage::Pong { nonce },
            HostRequest::ListApps { include_hidden } => {
                let path = self.launcher().run_as().path.clone();
                let mut cat = Catalog::load(&self.catalog_dirs, &path);
                cat.mark_defaults(Path::new(crate::catalog::ALTERNATIVES_DIR), &path);
                if !include_hidden {
                    cat.entries.retain(|e| !e.no_display);
                }
                let reply = Reply::to(id, AgentMessage::Apps { apps: cat.entries });
                if let Err(e) = encode(&reply) {
                    return Reply::error(Some(id), ErrorCode::Internal, format!("catalog does not fit a frame: {e}"));
                }
                return reply;
            }
            HostRequest::Launch(launch) => match self.launch(conn, &launch) {
                Ok((handle, pid)) => AgentMessage::Launched { handle, pid },
                Err((code, message)) => return Reply::error(Some(id), code, message),
            },
            HostRequest::Stop { handle, grace_ms } => {
                match self.launcher().stop(handle, Duration::from_millis(grace_ms.min(60_000) as u64)) {
                    Ok(()) => AgentMessage::Ack,
                    Err(e) => return Reply::error(Some(id), ErrorCode::UnknownHandle, e.to_string()),
                }
            }
            HostRequest::Shutdown | HostRequest::Reboot => {
                if self.power == Power::Refused {
                    return Reply::error(
                        Some(id),
                        ErrorCode::Refused,
                        "this agent is not the guest's init; power requests are refused",
                    );
                }
                let reboot = matches!(req, HostRequest::Reboot);
                let launcher = self.launcher();
                std::thread::spawn(move || crate::power::power_off(&launcher, reboot));
                AgentMessage::Ack
            }
        };
        Reply::to(id, body)
    }

    /// Whether connection `conn`'s host announced the bridge.
    fn host_bridge(&self, conn: u64) -> bool {
        self.current.lock().expect("current connection").as_ref().is_some_and(|s| s.id == conn && s.host_bridge)
    }

    fn launch(&self, conn: u64, launch: &Launch) -> Result<(u64, u32), (ErrorCode, String)> {
        let launcher = self.launcher();
        let argv = match &launch.app {
            AppRef::Id(app) => {
                let cat = Catalog::load(&self.catalog_dirs, &launcher.run_as().path);
                let entry = cat.get(app).ok_or((ErrorCode::UnknownApp, format!("no app {app:?} in the catalog")))?;
                let mut argv =
                    expand_exec(entry, &launch.args).map_err(|e| (ErrorCode::BadArguments, e.to_string()))?;
                if entry.terminal {
                    argv.insert(0, "foot".to_string());
                }
                argv
            }
            AppRef::Argv(argv) => argv.iter().chain(&launch.args).cloned().collect(),
        };
        let argv = match (&launcher.run_as().bridge, launch.display) {
            (Some(waypipe), DisplayMode::Native) if self.host_bridge(conn) => bridged_argv(waypipe, &argv),
            _ => argv,
        };
        // An embedded app shows in the desktop session: start it if it is
        // gone, wait briefly for a start in progress (the host waits for
        // this reply); while it is still starting the app waits for
        // weston's socket in its own process.
        let session = self.desktop.lock().expect("desktop slot").clone();
        let mut argv = argv;
        if let Some(session) = session {
            match session.before_launch(&launcher, launch.display, DESKTOP_LAUNCH_WAIT) {
                BeforeLaunch::Go => {}
                BeforeLaunch::Starting(socket) => {
                    tracing::info!("desktop session still starting: the app starts once {} serves", socket.display());
                    argv = wait_for_display(&socket, &argv);
                }
                BeforeLaunch::Failed(e) => tracing::warn!("launching without the desktop session: {e}"),
            }
        }
        launcher.launch(&argv, &launch.env, launch.cwd.as_deref(), launch.display).map_err(|e| {
            let code = match e {
                LaunchError::Spawn { .. } | LaunchError::Pipe(_) => ErrorCode::SpawnFailed,
                LaunchError::ShuttingDown => ErrorCode::Refused,
                LaunchError::UnknownHandle(_) => ErrorCode::UnknownHandle,
                _ => ErrorCode::BadArguments,
            };
            (code, e.to_string())
        })
    }
}

fn send(writer: &Writer, reply: &Reply) -> Result<(), FrameError> {
    let bytes = encode(reply)?;
    let mut w = writer.lock().expect("writer");
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}
