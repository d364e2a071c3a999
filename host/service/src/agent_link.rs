//! The service's one connection to a running VM's agent.
//!
//! The agent serves one host connection at a time: a new connection
//! supersedes the old one, and app exits and output lines go only to the
//! current one (queued while there is none). So the service keeps exactly one
//! connection per running VM, owned by this module's thread, and every API
//! call that talks to the guest goes through it: requests are answered in
//! order, and the events that arrive between them (an app's exit, its output)
//! are collected here, whoever launched the app. Each exit becomes an
//! `app_exited` event on the service's stream and wakes whoever waits for it.
//!
//! A broken connection (the guest rebooting, another host connection taking
//! over) is reopened on the next request, or within a second while someone
//! waits for an exit; the agent flushes the events it queued meanwhile after
//! the new `hello`. The link ends when its last handle is dropped (the VM
//! stopped).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rayos_contract::{AgentMessage, DesktopEntry, GuestPolicy, HostRequest, Launch, CAP_WAYLAND_BRIDGE};

use crate::events::{Event, Events};
use crate::guest::{ClientError, GuestClient};

/// Output lines kept per app (the rest are counted, not kept).
pub const MAX_OUTPUT_LINES: usize = 1000;
/// Exits remembered for a late `wait_exit`, and apps whose output is kept.
const MAX_REMEMBERED: usize = 256;
/// How long one request may wait for the agent's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the idle link reads the agent's events.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Guest(#[from] ClientError),
    #[error("the connection to VM {0}'s agent is closed (the VM stopped)")]
    Gone(String),
    #[error("app {handle} did not exit within {secs} s")]
    WaitTimeout { handle: u64, secs: u64 },
}

/// How an app ended, with the output it printed (its first
/// [`MAX_OUTPUT_LINES`] lines).
#[derive(Debug, Clone, PartialEq)]
pub struct AppExit {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub output: Vec<String>,
}

enum Op {
    Request { body: HostRequest, reply: mpsc::Sender<Result<AgentMessage, ClientError>> },
    WaitExit { handle: u64, reply: mpsc::Sender<AppExit> },
}

/// A handle on a VM's agent connection (cheap to clone).
#[derive(Clone)]
pub struct AgentLink {
    vm: String,
    tx: mpsc::Sender<Op>,
}

impl AgentLink {
    /// Starts the link's thread for the agent behind the hybrid vsock socket
    /// `socket`; `bridge`: announce the native-window bridge in `hello`.
    pub fn start(vm: &str, socket: PathBuf, bridge: bool, events: Events) -> AgentLink {
        let (tx, rx) = mpsc::channel();
        let mut state = LinkState {
            vm: vm.to_string(),
            socket,
            caps: if bridge { vec![CAP_WAYLAND_BRIDGE] } else { vec![] },
            events,
            client: None,
            last_connect: None,
            exits: HashMap::new(),
            exit_order: VecDeque::new(),
            output: HashMap::new(),
            waiters: HashMap::new(),
        };
        std::thread::Builder::new()
            .name(format!("agent-{vm}"))
            .spawn(move || state.run(rx))
            .expect("a thread for the agent link");
        AgentLink { vm: vm.to_string(), tx }
    }

    /// One request, answered by the agent (an agent error is
    /// [`ClientError::Agent`]).
    pub fn request(&self, body: HostRequest) -> Result<AgentMessage, LinkError> {
        let (reply, rx) = mpsc::channel();
        self.tx.send(Op::Request { body, reply }).map_err(|_| self.gone())?;
        Ok(rx.recv().map_err(|_| self.gone())??)
    }

    pub fn list_apps(&self, include_hidden: bool) -> Result<Vec<DesktopEntry>, LinkError> {
        match self.request(HostRequest::ListApps { include_hidden })? {
            AgentMessage::Apps { apps } => Ok(apps),
            other => Err(ClientError::Unexpected(Box::new(other)).into()),
        }
    }

    /// Launches after checking `policy` (nothing is sent when it refuses);
    /// returns `(handle, pid)`.
    pub fn launch(&self, policy: &GuestPolicy, launch: Launch) -> Result<(u64, u32), LinkError> {
        policy.check_launch(&launch).map_err(ClientError::from)?;
        match self.request(HostRequest::Launch(launch))? {
            AgentMessage::Launched { handle, pid } => Ok((handle, pid)),
            other => Err(ClientError::Unexpected(Box::new(other)).into()),
        }
    }

    /// Waits for app `handle` to exit (it may have already).
    pub fn wait_exit(&self, handle: u64, timeout: Duration) -> Result<AppExit, LinkError> {
        let (reply, rx) = mpsc::channel();
        self.tx.send(Op::WaitExit { handle, reply }).map_err(|_| self.gone())?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => LinkError::WaitTimeout { handle, secs: timeout.as_secs() },
            mpsc::RecvTimeoutError::Disconnected => self.gone(),
        })
    }

    pub fn power(&self, reboot: bool) -> Result<(), LinkError> {
        match self.request(if reboot { HostRequest::Reboot } else { HostRequest::Shutdown })? {
            AgentMessage::Ack => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other)).into()),
        }
    }

    fn gone(&self) -> LinkError {
        LinkError::Gone(self.vm.clone())
    }
}

struct LinkState {
    vm: String,
    socket: PathBuf,
    caps: Vec<&'static str>,
    events: Events,
    client: Option<GuestClient>,
    last_connect: Option<Instant>,
    exits: HashMap<u64, AppExit>,
    exit_order: VecDeque<u64>,
    output: HashMap<u64, Vec<String>>,
    waiters: HashMap<u64, Vec<mpsc::Sender<AppExit>>>,
}

impl LinkState {
    fn run(&mut self, rx: mpsc::Receiver<Op>) {
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Op::Request { body, reply }) => {
                    let r = self.request(body);
                    let _ = reply.send(r);
                }
                Ok(Op::WaitExit { handle, reply }) => match self.exits.get(&handle) {
                    Some(e) => {
                        let _ = reply.send(e.clone());
                    }
                    None => self.waiters.entry(handle).or_default().push(reply),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => self.poll(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn connect(&mut self) -> Result<&mut GuestClient, ClientError> {
        if self.client.is_none() {
            self.last_connect = Some(Instant::now());
            let c = GuestClient::connect_with(&self.socket, rayos_contract::AGENT_PORT, REPLY_TIMEOUT, &self.caps)?;
            tracing::debug!(vm = %self.vm, "connected to the agent");
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// A request; a connection found broken is reopened once.
    fn request(&mut self, body: HostRequest) -> Result<AgentMessage, ClientError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.connect().and_then(|c| c.request(body.clone()));
            self.dispatch();
            match r {
                Err(e) if broken(&e) => {
                    self.client = None;
                    if tries >= 2 {
                        return Err(e);
                    }
                    tracing::info!(vm = %self.vm, "the agent connection broke ({e}); reconnecting");
                }
                Ok(AgentMessage::Launched { handle, pid }) => {
                    let app = match &body {
                        HostRequest::Launch(l) => describe(l),
                        _ => String::new(),
                    };
                    self.events.send(Event::AppLaunched { vm: self.vm.clone(), app, handle, pid });
                    return Ok(AgentMessage::Launched { handle, pid });
                }
                other => return other,
            }
        }
    }

    /// Reads the events that arrived while idle; reconnects (at most once a
    /// second) while someone waits for an exit.
    fn poll(&mut self) {
        let waiting = !self.waiters.is_empty();
        if self.client.is_none() {
            if !waiting || self.last_connect.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            if let Err(e) = self.connect() {
                tracing::debug!(vm = %self.vm, "reconnecting to the agent: {e}");
                return;
            }
        }
        if let Some(c) = self.client.as_mut() {
            if let Err(e) = c.read_events(Duration::from_millis(10)) {
                if broken(&e) {
                    tracing::info!(vm = %self.vm, "the agent connection broke ({e})");
                    self.client = None;
                }
            }
        }
        self.dispatch();
    }

    /// Files the events the client collected: output lines by app, exits.
    fn dispatch(&mut self) {
        let Some(c) = self.client.as_mut() else { return };
        for e in c.take_events() {
            match e {
                AgentMessage::Log { line, .. } => {
                    if let Some((handle, text)) = app_line(&line) {
                        if self.output.len() >= MAX_REMEMBERED && !self.output.contains_key(&handle) {
                            continue;
                        }
                        let out = self.output.entry(handle).or_default();
                        if out.len() < MAX_OUTPUT_LINES {
                            out.push(text.to_string());
                        }
                    }
                }
                AgentMessage::Exited { handle, status, signal } => {
                    let exit = AppExit { status, signal, output: self.output.remove(&handle).unwrap_or_default() };
                    self.events.send(Event::AppExited { vm: self.vm.clone(), handle, status, signal });
                    for w in self.waiters.remove(&handle).unwrap_or_default() {
                        let _ = w.send(exit.clone());
                    }
                    if self.exit_order.len() >= MAX_REMEMBERED {
                        if let Some(old) = self.exit_order.pop_front() {
                            self.exits.remove(&old);
                        }
                    }
                    self.exit_order.push_back(handle);
                    self.exits.insert(handle, exit);
                }
                other => tracing::debug!(vm = %self.vm, "agent event: {other:?}"),
            }
        }
    }
}

/// Whether `e` means the connection is unusable (rather than one request failing).
fn broken(e: &ClientError) -> bool {
    match e {
        ClientError::Agent { code, .. } => *code == rayos_contract::ErrorCode::Superseded,
        ClientError::Policy(_) | ClientError::Timeout(_) => false,
        _ => true,
    }
}

/// `[app N] text` → `(N, text)`.
fn app_line(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix("[app ")?;
    let (n, text) = rest.split_once("] ")?;
    Some((n.parse().ok()?, text))
}

fn describe(l: &Launch) -> String {
    match &l.app {
        rayos_contract::AppRef::Id(id) => id.clone(),
        rayos_contract::AppRef::Argv(argv) => argv.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_lines_are_split() {
        assert_eq!(app_line("[app 12] hello ] world"), Some((12, "hello ] world")));
        assert_eq!(app_line("[app x] no"), None);
        assert_eq!(app_line("agent started"), None);
    }

    #[test]
    fn a_request_without_a_guest_names_the_socket_and_a_lost_link_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let link = AgentLink::start("t", dir.path().join("vsock.sock"), false, Events::default());
        let e = link.list_apps(false).unwrap_err().to_string();
        assert!(e.contains("vsock.sock"), "{e}");
        let e = link.wait_exit(7, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, LinkError::WaitTimeout { handle: 7, .. }), "{e}");
    }
}
