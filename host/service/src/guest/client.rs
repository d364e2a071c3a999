//! A blocking client for the guest agent.
//!
//! The vsock backend exposes the guest's vsock ports on one unix socket
//! (hybrid vsock): the host connects to it, writes `CONNECT <port>\n` and
//! reads `OK <local port>\n` once the guest accepted; from then on the socket
//! is the guest connection. [`GuestClient::connect`] does that, then sends
//! `Hello`. Every request waits for the reply with its id; events that
//! arrive meanwhile (exits, log lines) are kept and can be taken with
//! [`GuestClient::take_events`] or waited for with [`GuestClient::wait_exit`].
//! The host checks its policy before sending a launch.
//!
//! The guest is untrusted: a wait has one deadline for a whole frame (a guest
//! sending a byte a second cannot stretch it), at most [`MAX_EVENTS`] events
//! wait unread (more is [`ClientError::Flood`]), and the version the agent
//! answers `Hello` with must be one the host offered.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayos_contract::frame::{FrameError, FrameReader};
use rayos_contract::{
    decode_reply, encode, AgentMessage, DesktopEntry, ErrorCode, GuestPolicy, HostRequest, Launch, PolicyError, Reply,
    Request, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the guest's vsock socket {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("guest port {port} refused the connection through {path} (is the agent running?)")]
    Refused { path: PathBuf, port: u32 },
    #[error("unexpected handshake answer {0:?} from the vsock backend")]
    Handshake(String),
    #[error("no reply from the guest agent within {0:?}")]
    Timeout(Duration),
    #[error("guest connection: {0}")]
    Frame(#[from] FrameError),
    #[error("guest connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the guest closed the connection")]
    Closed,
    #[error("unreadable message from the guest: {0}")]
    BadReply(serde_json::Error),
    #[error("guest agent: {message} ({code:?})")]
    Agent { code: ErrorCode, message: String },
    #[error("unexpected reply from the guest agent: {0:?}")]
    Unexpected(Box<AgentMessage>),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the guest agent answered with protocol version {got}; this host speaks {min} to {max}")]
    Version { got: u32, min: u32, max: u32 },
    #[error("the guest sent more than {0} events without the host reading them")]
    Flood(usize),
}

/// Events kept unread at most (an agent sends a few per launched app).
pub const MAX_EVENTS: usize = 4096;

/// The guest connection, read under a deadline that covers a whole frame:
/// every read gets only the time left.
struct Deadlined {
    stream: UnixStream,
    deadline: Option<Instant>,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// What `Hello` told us.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: u32,
    pub agent: String,
    pub kernel: String,
    pub capabilities: Vec<String>,
}

pub struct GuestClient {
    stream: UnixStream,
    frames: FrameReader<Deadlined>,
    next_id: u64,
    events: Vec<AgentMessage>,
    timeout: Duration,
    pub info: AgentInfo,
}

impl GuestClient {
    /// Connect to guest `port` through the hybrid vsock socket `path`, then
    /// negotiate the protocol.
    pub fn connect(path: &Path, port: u32, timeout: Duration) -> Result<GuestClient, ClientError> {
        Self::connect_with(path, port, timeout, &[])
    }

    /// [`GuestClient::connect`], announcing the host's `capabilities` in
    /// `hello` (e.g. [`rayos_contract::CAP_WAYLAND_BRIDGE`] when this host
    /// serves the guest's native-window bridge).
    pub fn connect_with(
        path: &Path,
        port: u32,
        timeout: Duration,
        capabilities: &[&str],
    ) -> Result<GuestClient, ClientError> {
        let stream = hybrid_connect(path, port, timeout)?;
        Self::over(stream, timeout, capabilities)
    }

    /// Negotiates the protocol on a connection already open to the agent.
    pub fn over(stream: UnixStream, timeout: Duration, capabilities: &[&str]) -> Result<GuestClient, ClientError> {
        let frames = FrameReader::new(Deadlined { stream: stream.try_clone()?, deadline: None });
        let mut c = GuestClient {
            stream,
            frames,
            next_id: 1,
            events: Vec::new(),
            timeout,
            info: AgentInfo { version: 0, agent: String::new(), kernel: String::new(), capabilities: Vec::new() },
        };
        match c.request(HostRequest::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        })? {
            AgentMessage::Hello { version, .. } if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) => {
                Err(ClientError::Version { got: version, min: MIN_PROTOCOL_VERSION, max: PROTOCOL_VERSION })
            }
            AgentMessage::Hello { version, capabilities, agent, kernel } => {
                c.info = AgentInfo { version, agent, kernel, capabilities };
                Ok(c)
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Send one request and return its reply's body (an agent error becomes
    /// [`ClientError::Agent`]).
    pub fn request(&mut self, body: HostRequest) -> Result<AgentMessage, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&encode(&Request::new(id, body))?)?;
        self.reply_to(Some(id))
    }

    /// Wait for the reply to `id`; with `None`, for an error reply that names
    /// no request (the answer to an unreadable frame).
    pub fn reply_to(&mut self, id: Option<u64>) -> Result<AgentMessage, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let r = self.read_until(deadline)?;
            let wanted = r.re == id && (id.is_some() || matches!(r.body, AgentMessage::Error { .. }));
            if !wanted {
                self.keep_event(r.body)?;
                continue;
            }
            return match r.body {
                AgentMessage::Error { code, message } if id.is_some() => Err(ClientError::Agent { code, message }),
                body => Ok(body),
            };
        }
    }

    fn keep_event(&mut self, event: AgentMessage) -> Result<(), ClientError> {
        if self.events.len() >= MAX_EVENTS {
            return Err(ClientError::Flood(MAX_EVENTS));
        }
        self.events.push(event);
        Ok(())
    }

    fn read_until(&mut self, deadline: Instant) -> Result<Reply, ClientError> {
        if deadline.saturating_duration_since(Instant::now()).is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.frames.get_mut().deadline = Some(deadline);
        match self.frames.read_frame() {
            Ok(Some(frame)) => decode_reply(&frame).map_err(ClientError::BadReply),
            Ok(None) => Err(ClientError::Closed),
            Err(FrameError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Write raw bytes on the channel (tests of the agent's robustness).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        match self.request(HostRequest::Ping { nonce })? {
            AgentMessage::Pong { nonce: n } if n == nonce => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    pub fn list_apps(&mut self, include_hidden: bool) -> Result<Vec<DesktopEntry>, ClientError> {
        match self.request(HostRequest::ListApps { include_hidden })? {
            AgentMessage::Apps { apps } => Ok(apps),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Launch after checking `policy`; returns `(handle, pid)`.
    pub fn launch(&mut self, policy: &GuestPolicy, launch: Launch) -> Result<(u64, u32), ClientError> {
        policy.check_launch(&launch)?;
        match self.request(HostRequest::Launch(launch))? {
            AgentMessage::Launched { handle, pid } => Ok((handle, pid)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    pub fn stop(&mut self, handle: u64, grace: Duration) -> Result<(), ClientError> {
        match self.request(HostRequest::Stop { handle, grace_ms: grace.as_millis().min(u32::MAX as u128) as u32 })? {
            AgentMessage::Ack => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Ask the guest to power off (`reboot: false`) or restart.
    pub fn power(&mut self, reboot: bool) -> Result<(), ClientError> {
        let req = if reboot { HostRequest::Reboot } else { HostRequest::Shutdown };
        match self.request(req)? {
            AgentMessage::Ack => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Wait for the app's exit: `(status, signal)`.
    pub fn wait_exit(&mut self, handle: u64, timeout: Duration) -> Result<(Option<i32>, Option<i32>), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.events.iter().find_map(|e| match e {
                AgentMessage::Exited { handle: h, status, signal } if *h == handle => Some((*status, *signal)),
                _ => None,
            }) {
                return Ok(found);
            }
            let r = self.read_until(deadline).map_err(|e| match e {
                ClientError::Timeout(_) => ClientError::Timeout(timeout),
                e => e,
            })?;
            self.keep_event(r.body)?;
        }
    }

    /// Reads whatever the agent sends within `timeout` (events, kept for
    /// [`GuestClient::take_events`]); a quiet channel is not an error.
    pub fn read_events(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_until(deadline) {
                Ok(r) => self.keep_event(r.body)?,
                Err(ClientError::Timeout(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    pub fn take_events(&mut self) -> Vec<AgentMessage> {
        std::mem::take(&mut self.events)
    }
}

/// Open guest `port` through the hybrid vsock socket at `path`.
pub fn hybrid_connect(path: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ClientError> {
    let mut s =
        UnixStream::connect(path).map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(rayos_contract::hybrid::connect_line(port).as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return Err(ClientError::Refused { path: path.to_path_buf(), port }),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < rayos_contract::hybrid::MAX_LINE => line.push(byte[0]),
            Ok(_) => return Err(ClientError::Handshake(String::from_utf8_lossy(&line).into_owned())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(ClientError::Timeout(timeout))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Refused { path: path.to_path_buf(), port })
            }
            Err(e) => return Err(e.into()),
        }
    }
    match rayos_contract::hybrid::parse_ok(&line) {
        Ok(_) => Ok(s),
        Err(_) => Err(ClientError::Handshake(String::from_utf8_lossy(&line).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake backend end: answers the handshake with `answer`, then echoes
    /// one Hello reply.
    fn backend(answer: &'static str) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap();
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(answer.as_bytes()).unwrap();
            if answer.starts_with("OK") {
                let mut frames = FrameReader::new(s.try_clone().unwrap());
                let req = rayos_contract::decode_request(&frames.read_frame().unwrap().unwrap()).unwrap();
                let reply = Reply::to(
                    req.id,
                    AgentMessage::Hello { version: 1, capabilities: vec![], agent: "test".into(), kernel: "k".into() },
                );
                s.write_all(&encode(&reply).unwrap()).unwrap();
            }
            got
        });
        (dir, path, t)
    }

    #[test]
    fn handshake_then_hello() {
        let (_d, path, t) = backend("OK 1073741824\n");
        let c = GuestClient::connect(&path, 5252, Duration::from_secs(5)).unwrap();
        assert_eq!(c.info.version, 1);
        assert_eq!(t.join().unwrap(), "CONNECT 5252\n");
    }

    /// An agent on the other end of a socket pair: reads the Hello and
    /// runs `then` with the stream and the Hello's id.
    fn agent(then: impl FnOnce(&mut UnixStream, u64) + Send + 'static) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut frames = FrameReader::new(guest.try_clone().unwrap());
            let req = rayos_contract::decode_request(&frames.read_frame().unwrap().unwrap()).unwrap();
            then(&mut guest, req.id);
        });
        (host, t)
    }

    fn hello(version: u32) -> AgentMessage {
        AgentMessage::Hello { version, capabilities: vec![], agent: "test".into(), kernel: "k".into() }
    }

    #[test]
    fn a_guest_trickling_a_frame_cannot_stretch_the_deadline() {
        let (host, t) = agent(|s, id| {
            let frame = encode(&Reply::to(id, hello(PROTOCOL_VERSION))).unwrap();
            // One byte every 100 ms: the whole frame would take seconds.
            for b in frame {
                if s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let r = GuestClient::over(host, Duration::from_millis(500), &[]);
        let took = started.elapsed();
        assert!(matches!(r, Err(ClientError::Timeout(_))), "{:?}", r.err());
        assert!(took < Duration::from_millis(900), "the wait took {took:?} for a 500 ms deadline");
        drop(r);
        t.join().unwrap();
    }

    #[test]
    fn a_version_the_host_did_not_offer_is_refused() {
        let (host, t) = agent(|s, id| {
            s.write_all(&encode(&Reply::to(id, hello(PROTOCOL_VERSION + 1))).unwrap()).unwrap();
        });
        let e = GuestClient::over(host, Duration::from_secs(5), &[]).err().expect("refused");
        assert!(matches!(e, ClientError::Version { .. }), "{e}");
        assert!(e.to_string().contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn a_guest_flooding_events_is_cut_off() {
        let (host, t) = agent(|s, _id| {
            let mut all = Vec::new();
            for h in 0..(MAX_EVENTS as u64 + 10) {
                let ev =
                    rayos_contract::Reply::event(AgentMessage::Exited { handle: h, status: Some(0), signal: None });
                all.extend(encode(&ev).unwrap());
            }
            let _ = s.write_all(&all);
            std::thread::sleep(Duration::from_secs(1));
        });
        let e = GuestClient::over(host, Duration::from_secs(10), &[]).err().expect("cut off");
        assert!(matches!(e, ClientError::Flood(MAX_EVENTS)), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn refused_and_garbled_handshakes() {
        let (_d, path, t) = backend("");
        assert!(matches!(hybrid_connect(&path, 1, Duration::from_secs(5)), Err(ClientError::Refused { port: 1, .. })));
        t.join().unwrap();
        let (_d, path, t) = backend("NOPE\n");
        assert!(
            matches!(hybrid_connect(&path, 1, Duration::from_secs(5)), Err(ClientError::Handshake(s)) if s == "NOPE")
        );
        t.join().unwrap();
        let missing = Path::new("/nonexistent/vsock");
        assert!(matches!(hybrid_connect(missing, 1, Duration::from_secs(1)), Err(ClientError::Connect { .. })));
    }
}
