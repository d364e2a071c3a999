//! The connection table: maps guest packets to host unix sockets and host
//! socket events to packets for the guest.
//!
//! All host file descriptors (the hybrid listener, the host sockets of
//! every connection, and a timer for deadlines) sit on one epoll owned by
//! the muxer, whose own descriptor the backend registers on the vhost-user
//! worker's epoll; the muxer drains it without blocking
//! ([`Muxer::process_host_events`]). Interest is level-triggered and kept
//! exact: a socket is watched for input only while we have not yet read
//! what it reported and the guest can take more, and for output only while
//! guest data waits in our buffer, so the worker never spins.
//!
//! Packets for the guest come from a round-robin work list of connections
//! plus a queue of RSTs that answer packets no connection owns; when the RX
//! queue has no buffer the work waits for the guest's next RX kick.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use rayos_contract::peer::{allowed as peer_allowed, credentials as peer_cred, effective_uid as my_uid};

use super::connection::{Connection, ConnectionError, RxKind, State};
use super::packet::{self, Header, Op, RxBuffer, TxPacket, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_SEND, TYPE_STREAM};

/// Settings of one device's muxer.
#[derive(Clone, Debug)]
pub struct MuxerConfig {
    /// The guest's CID.
    pub guest_cid: u64,
    /// The hybrid socket: the host connects here; guest connections to
    /// host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
    /// Receive buffer we advertise per connection (bytes).
    pub buf_alloc: u32,
    /// Most connections at once (established or being set up).
    pub max_connections: usize,
    /// How long a host socket may take to send `CONNECT <port>\n`, and the
    /// guest to answer a REQUEST.
    pub connect_timeout: Duration,
    /// How long a closing connection may wait for the guest's RST or for
    /// its last data to drain before we reset it.
    pub close_timeout: Duration,
}

impl MuxerConfig {
    pub fn new(guest_cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        MuxerConfig {
            guest_cid,
            uds_path: uds_path.into(),
            buf_alloc: 128 * 1024,
            max_connections: 512,
            connect_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("{0} is not a guest CID (use 3 to 4294967294)")]
    ReservedCid(u64),
    #[error("{0} exists and is not a unix socket")]
    NotASocket(String),
    #[error("cannot listen on {path}: {source}")]
    Listen { path: String, source: std::io::Error },
    #[error("epoll: {0}")]
    Epoll(std::io::Error),
    #[error("timer: {0}")]
    Timer(std::io::Error),
}

/// Whether `cid` can name a guest.
pub fn valid_guest_cid(cid: u64) -> bool {
    cid > HOST_CID && cid < u32::MAX as u64
}

/// (host port, guest port).
type Key = (u32, u32);

const TOKEN_LISTENER: u64 = 0;
const TOKEN_TIMER: u64 = 1;
const FIRST_TOKEN: u64 = 2;
/// Longest `CONNECT <port>\n` line accepted from a host socket.
const MAX_CONNECT_LINE: usize = rayos_contract::hybrid::MAX_LINE;
/// RSTs waiting for RX buffers beyond this are dropped.
const MAX_QUEUED_RST: usize = 1024;
/// First host port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const TIMER_TICK: Duration = Duration::from_millis(100);

/// A host socket that has not yet said which guest port it wants.
struct HostPending {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
    /// The connecting process.
    peer_pid: i32,
}

/// Host connections one process may leave waiting for their `CONNECT` line
/// at once; more are refused, so one process cannot starve the others of
/// the connection limit.
pub const MAX_PENDING_PER_PEER: usize = 16;

pub struct Muxer {
    cfg: MuxerConfig,
    epoll: Epoll,
    listener: UnixListener,
    timer: TimerFd,
    timer_armed: bool,
    conns: HashMap<Key, Connection>,
    host_pending: HashMap<u64, HostPending>,
    by_token: HashMap<u64, Key>,
    next_token: u64,
    next_local_port: u32,
    rx_work: VecDeque<Key>,
    rst_queue: VecDeque<Header>,
    scratch: Vec<u8>,
}

impl Muxer {
    /// Listens on `cfg.uds_path` (a stale socket there is replaced).
    pub fn new(cfg: MuxerConfig) -> Result<Self, MuxerError> {
        if !valid_guest_cid(cfg.guest_cid) {
            return Err(MuxerError::ReservedCid(cfg.guest_cid));
        }
        let shown = cfg.uds_path.display().to_string();
        if let Ok(m) = std::fs::symlink_metadata(&cfg.uds_path) {
            if !m.file_type().is_socket() {
                return Err(MuxerError::NotASocket(shown));
            }
            let _ = std::fs::remove_file(&cfg.uds_path);
        }
        let listen_err = |source| MuxerError::Listen { path: shown.clone(), source };
        let listener = UnixListener::bind(&cfg.uds_path).map_err(listen_err)?;
        // Only this user reaches the guest's ports (and accept checks each
        // peer too, for a connection made before the mode changed).
        std::fs::set_permissions(&cfg.uds_path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), EpollEvent::new(EventSet::IN, TOKEN_LISTENER))
            .map_err(MuxerError::Epoll)?;
        let timer = TimerFd::new().map_err(|e| MuxerError::Timer(e.into()))?;
        epoll
            .ctl(ControlOperation::Add, timer.as_raw_fd(), EpollEvent::new(EventSet::IN, TOKEN_TIMER))
            .map_err(MuxerError::Epoll)?;
        tracing::info!("vsock: guest CID {}, host sockets connect to {shown}", cfg.guest_cid);
        Ok(Muxer {
            cfg,
            epoll,
            listener,
            timer,
            timer_armed: false,
            conns: HashMap::new(),
            host_pending: HashMap::new(),
            by_token: HashMap::new(),
            next_token: FIRST_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rx_work: VecDeque::new(),
            rst_queue: VecDeque::new(),
            scratch: vec![0; packet::MAX_PKT_DATA as usize],
        })
    }

    /// The muxer's epoll: readable when a host socket or the timer needs
    /// [`Self::process_host_events`].
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn guest_cid(&self) -> u64 {
        self.cfg.guest_cid
    }

    /// Connections in the table (any state).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Credit counters of the connection (host port, guest port):
    /// (bytes sent to the guest, guest bytes forwarded, guest credit left).
    pub fn connection_counters(&self, local_port: u32, peer_port: u32) -> Option<(u32, u32, u32)> {
        self.conns.get(&(local_port, peer_port)).map(|c| c.counters())
    }

    /// Whether packets wait for RX buffers.
    pub fn has_rx_work(&self) -> bool {
        !self.rst_queue.is_empty() || !self.rx_work.is_empty()
    }

    /// Drops every connection (device reset): host sockets are closed.
    pub fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.kill(k, false);
        }
        for (_, p) in self.host_pending.drain() {
            let _ = self.epoll.ctl(ControlOperation::Delete, p.stream.as_raw_fd(), EpollEvent::default());
        }
        self.by_token.clear();
        self.rx_work.clear();
        self.rst_queue.clear();
        self.rearm_timer();
    }

    /// Takes every packet the guest made available on the TX queue.
    /// Returns whether any descriptor was used.
    pub fn process_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        while let Some(mut chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match packet::parse_tx(mem, &mut chain, self.cfg.guest_cid) {
                Ok(pkt) => self.handle_guest_packet(pkt),
                Err(e) => tracing::warn!("vsock: dropping guest packet (descriptor {head}): {e}"),
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                tracing::warn!("vsock: tx used ring: {e}");
            }
            used = true;
        }
        self.rearm_timer();
        used
    }

    /// Fills RX buffers with pending packets. Returns whether any
    /// descriptor was used.
    pub fn process_rx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        loop {
            if let Some(hdr) = self.rst_queue.front().copied() {
                let Some(mut chain) = queue.pop_descriptor_chain(mem) else { break };
                let head = chain.head_index();
                let len = match RxBuffer::new(mem, &mut chain).and_then(|mut b| b.write(&hdr, &[])) {
                    Ok(len) => {
                        self.rst_queue.pop_front();
                        len
                    }
                    Err(e) => {
                        tracing::warn!("vsock: unusable rx buffer (descriptor {head}): {e}");
                        0
                    }
                };
                Self::add_used(mem, queue, head, len);
                used = true;
                continue;
            }
            let Some(key) = self.rx_work.pop_front() else { break };
            let Some(conn) = self.conns.get_mut(&key) else { continue };
            conn.in_rx_work = false;
            if !conn.has_rx_work() {
                self.refresh(key);
                continue;
            }
            let Some(mut chain) = queue.pop_descriptor_chain(mem) else {
                conn.in_rx_work = true;
                self.rx_work.push_front(key);
                break;
            };
            let head = chain.head_index();
            let mut buf = match RxBuffer::new(mem, &mut chain) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("vsock: unusable rx buffer (descriptor {head}): {e}");
                    Self::add_used(mem, queue, head, 0);
                    used = true;
                    conn.in_rx_work = true;
                    self.rx_work.push_front(key);
                    continue;
                }
            };
            let close_deadline = Instant::now() + self.cfg.close_timeout;
            match fill_rx(conn, &mut self.scratch, &mut buf, close_deadline) {
                Ok(Some(len)) => {
                    Self::add_used(mem, queue, head, len);
                    used = true;
                }
                Ok(None) => queue.go_to_previous_position(),
                Err(e) => {
                    queue.go_to_previous_position();
                    tracing::debug!("vsock: connection {}:{} reset: {e}", key.0, key.1);
                    self.kill(key, true);
                    continue;
                }
            }
            self.refresh(key);
        }
        self.rearm_timer();
        used
    }

    fn add_used(mem: &GuestMemoryMmap, queue: &mut Queue, head: u16, len: u32) {
        if let Err(e) = queue.add_used(mem, head, len) {
            tracing::warn!("vsock: rx used ring: {e}");
        }
    }

    /// Handles everything ready on the muxer's epoll, without blocking.
    pub fn process_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        let n = loop {
            match self.epoll.wait(0, &mut events) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("vsock: epoll: {e}");
                    return;
                }
            }
        };
        for ev in &events[..n] {
            let evset = ev.event_set();
            match ev.data() {
                TOKEN_LISTENER => self.accept_host(),
                TOKEN_TIMER => {
                    let _ = self.timer.wait();
                    self.check_deadlines();
                }
                token => {
                    if self.host_pending.contains_key(&token) {
                        self.read_connect_line(token);
                    } else if let Some(&key) = self.by_token.get(&token) {
                        self.host_socket_event(key, evset);
                    }
                }
            }
        }
        self.rearm_timer();
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn at_capacity(&self) -> bool {
        self.conns.len() + self.host_pending.len() >= self.cfg.max_connections
    }

    fn accept_host(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("vsock: accept on {}: {e}", self.cfg.uds_path.display());
                    return;
                }
            };
            let peer_pid = match peer_cred(&stream) {
                Ok((pid, uid)) if peer_allowed(uid, my_uid()) => pid,
                Ok((_, uid)) => {
                    tracing::warn!(
                        "vsock: refusing a host connection from uid {uid} (this backend runs as uid {})",
                        my_uid()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("vsock: refusing a host connection whose credentials cannot be read: {e}");
                    continue;
                }
            };
            let waiting = self.host_pending.values().filter(|p| p.peer_pid == peer_pid).count();
            if waiting >= MAX_PENDING_PER_PEER {
                tracing::warn!(
                    "vsock: refusing a host connection from pid {peer_pid}: it has {waiting} connections that have not said CONNECT yet"
                );
                continue;
            }
            if self.at_capacity() {
                tracing::warn!("vsock: {} connections open, refusing a host connection", self.cfg.max_connections);
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::warn!("vsock: host socket: {e}");
                continue;
            }
            let token = self.alloc_token();
            if let Err(e) =
                self.epoll.ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(EventSet::IN, token))
            {
                tracing::warn!("vsock: epoll add: {e}");
                continue;
            }
            let deadline = Instant::now() + self.cfg.connect_timeout;
            self.host_pending.insert(token, HostPending { stream, line: Vec::new(), deadline, peer_pid });
        }
    }

    /// Reads the host's `CONNECT <port>\n` a byte at a time, so that no
    /// byte after the newline is consumed here.
    fn read_connect_line(&mut self, token: u64) {
        let Some(p) = self.host_pending.get_mut(&token) else { return };
        let mut byte = [0u8; 1];
        let port = loop {
            match p.stream.read(&mut byte) {
                Ok(0) => break Err(ConnectRefused::Closed),
                Ok(_) if byte[0] == b'\n' => {
                    break rayos_contract::hybrid::parse_connect(&p.line).map_err(ConnectRefused::from)
                }
                Ok(_) if p.line.len() >= MAX_CONNECT_LINE => break Err(ConnectRefused::TooLong),
                Ok(_) => p.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => break Err(ConnectRefused::Io(e)),
            }
        };
        let Some(p) = self.host_pending.remove(&token) else { return };
        let port = match port {
            Ok(port) => port,
            Err(why) => {
                tracing::warn!("vsock: host connection refused: {why}");
                let _ = self.epoll.ctl(ControlOperation::Delete, p.stream.as_raw_fd(), EpollEvent::default());
                return;
            }
        };
        let local_port = self.alloc_local_port(port);
        let key = (local_port, port);
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let mut conn = Connection::host_initiated(
            p.stream,
            token,
            self.cfg.guest_cid,
            local_port,
            port,
            deadline,
            self.cfg.buf_alloc,
        );
        conn.registered = Some(EventSet::IN);
        tracing::debug!("vsock: host connects to guest port {port} from port {local_port}");
        self.by_token.insert(token, key);
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = if p == u32::MAX - 1 { FIRST_LOCAL_PORT } else { p + 1 };
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn host_socket_event(&mut self, key: Key, evset: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if evset.contains(EventSet::IN) {
            conn.readable = true;
        }
        if evset.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            conn.host_hup = true;
            // Anything still in the socket is read (without epoll) until EOF.
            conn.readable = true;
        }
        if evset.contains(EventSet::OUT) {
            if let Err(e) = conn.flush() {
                tracing::debug!("vsock: connection {}:{} reset: {e}", key.0, key.1);
                self.kill(key, true);
                return;
            }
        }
        self.refresh(key);
    }

    /// Re-derives what a connection needs after anything changed: its end
    /// of life, its place on the RX work list and its epoll interest.
    fn refresh(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        // The guest closed and everything it sent reached the host.
        if conn.peer_shutdown == SHUTDOWN_BOTH && conn.tx_buffered() == 0 {
            self.kill(key, true);
            return;
        }
        // Host fully gone and its last bytes delivered: tell the guest.
        if conn.host_hup && conn.host_eof && !matches!(conn.state, State::Closing { .. }) {
            conn.queue_shutdown(SHUTDOWN_BOTH);
            conn.state = State::Closing { deadline: Instant::now() + self.cfg.close_timeout };
        }
        conn.note_credit_stall();
        if conn.has_rx_work() && !conn.in_rx_work {
            conn.in_rx_work = true;
            self.rx_work.push_back(key);
        }
        let fd = conn.stream.as_raw_fd();
        if conn.host_hup {
            if conn.registered.take().is_some() {
                let _ = self.epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            return;
        }
        let want = conn.interest();
        let op = match conn.registered {
            Some(cur) if cur == want => return,
            Some(_) => ControlOperation::Modify,
            None => ControlOperation::Add,
        };
        match self.epoll.ctl(op, fd, EpollEvent::new(want, conn.token)) {
            Ok(()) => conn.registered = Some(want),
            Err(e) => {
                tracing::warn!("vsock: epoll: {e}");
                self.kill(key, true);
            }
        }
    }

    /// Removes a connection, closing its host socket; with `rst` the guest
    /// is told.
    fn kill(&mut self, key: Key, rst: bool) {
        let Some(conn) = self.conns.remove(&key) else { return };
        self.by_token.remove(&conn.token);
        if conn.registered.is_some() {
            let _ = self.epoll.ctl(ControlOperation::Delete, conn.stream.as_raw_fd(), EpollEvent::default());
        }
        if rst {
            self.queue_rst(key.0, key.1);
        }
    }

    fn queue_rst(&mut self, local_port: u32, peer_port: u32) {
        if self.rst_queue.len() >= MAX_QUEUED_RST {
            tracing::warn!("vsock: {MAX_QUEUED_RST} RSTs already queued, dropping one for port {peer_port}");
            return;
        }
        self.rst_queue.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.cfg.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            type_: TYPE_STREAM,
            op: Op::Rst as u16,
            ..Header::default()
        });
    }

    fn handle_guest_packet(&mut self, pkt: TxPacket<'_>) {
        let h = pkt.hdr;
        let key = (h.dst_port, h.src_port);
        if h.type_ != TYPE_STREAM {
            tracing::debug!("vsock: guest packet of type {} refused", h.type_);
            self.queue_rst(h.dst_port, h.src_port);
            return;
        }
        let Some(op) = Op::from_u16(h.op) else {
            tracing::warn!("vsock: guest packet with unknown op {} refused", h.op);
            self.queue_rst(h.dst_port, h.src_port);
            return;
        };
        if op == Op::Request {
            self.guest_connect(&h);
            return;
        }
        let close_deadline = Instant::now() + self.cfg.close_timeout;
        let Some(conn) = self.conns.get_mut(&key) else {
            if op != Op::Rst {
                tracing::debug!("vsock: {op:?} for unknown connection {}:{}", key.0, key.1);
                self.queue_rst(h.dst_port, h.src_port);
            }
            return;
        };
        conn.update_peer_credit(h.buf_alloc, h.fwd_cnt);
        match op {
            Op::Request => {}
            Op::Rst => {
                tracing::debug!("vsock: guest reset connection {}:{}", key.0, key.1);
                self.kill(key, false);
                return;
            }
            Op::Response => {
                if !matches!(conn.state, State::LocalInit { .. }) {
                    tracing::warn!("vsock: unexpected RESPONSE on {}:{}", key.0, key.1);
                    self.kill(key, true);
                    return;
                }
                conn.state = State::Established;
                let line = rayos_contract::hybrid::ok_line(conn.local_port);
                // A fresh socket's send buffer takes a short line whole.
                if let Err(e) = conn.stream.write_all(line.as_bytes()) {
                    tracing::debug!("vsock: host socket of {}:{}: {e}", key.0, key.1);
                    self.kill(key, true);
                    return;
                }
            }
            Op::Rw => {
                if matches!(conn.state, State::LocalInit { .. }) {
                    tracing::warn!("vsock: data before RESPONSE on {}:{}", key.0, key.1);
                    self.kill(key, true);
                    return;
                }
                if !pkt.data.is_empty() {
                    let data = &pkt.data;
                    if conn.host_hup || conn.peer_shutdown & SHUTDOWN_SEND != 0 {
                        tracing::debug!(
                            "vsock: dropping {} bytes for closed host socket {}:{}",
                            pkt.data_len(),
                            key.0,
                            key.1
                        );
                    } else if let Err(e) = conn.recv_guest_data(data) {
                        match e {
                            ConnectionError::CreditViolation { .. } => {
                                tracing::warn!("vsock: connection {}:{} reset: {e}", key.0, key.1)
                            }
                            ConnectionError::Socket(_) => {
                                tracing::debug!("vsock: connection {}:{} reset: {e}", key.0, key.1)
                            }
                        }
                        self.kill(key, true);
                        return;
                    }
                }
            }
            Op::CreditUpdate => {}
            Op::CreditRequest => conn.credit_requested_by_guest(),
            Op::Shutdown => {
                conn.peer_shutdown |= h.flags & SHUTDOWN_BOTH;
                conn.maybe_shut_host_write();
                if conn.peer_shutdown == SHUTDOWN_BOTH && !matches!(conn.state, State::Closing { .. }) {
                    conn.state = State::Closing { deadline: close_deadline };
                }
            }
        }
        self.refresh(key);
    }

    fn guest_connect(&mut self, h: &Header) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            tracing::warn!("vsock: REQUEST for existing connection {}:{}; resetting it", key.0, key.1);
            self.kill(key, true);
            return;
        }
        if self.at_capacity() {
            tracing::warn!("vsock: {} connections open, refusing guest port {}", self.cfg.max_connections, h.src_port);
            self.queue_rst(h.dst_port, h.src_port);
            return;
        }
        let mut path: OsString = self.cfg.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(
                    "vsock: guest port {} to host port {}: {}: {e}",
                    h.src_port,
                    h.dst_port,
                    PathBuf::from(&path).display()
                );
                self.queue_rst(h.dst_port, h.src_port);
                return;
            }
        };
        let token = self.alloc_token();
        tracing::debug!("vsock: guest port {} connected to {}", h.src_port, PathBuf::from(&path).display());
        let conn = Connection::guest_initiated(stream, token, self.cfg.guest_cid, h.dst_port, h, self.cfg.buf_alloc);
        self.by_token.insert(token, key);
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self.host_pending.iter().filter(|(_, p)| p.deadline <= now).map(|(t, _)| *t).collect();
        for t in expired {
            if let Some(p) = self.host_pending.remove(&t) {
                tracing::warn!("vsock: host connection sent no CONNECT line in time");
                let _ = self.epoll.ctl(ControlOperation::Delete, p.stream.as_raw_fd(), EpollEvent::default());
            }
        }
        let expired: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::LocalInit { deadline } | State::Closing { deadline } if deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            tracing::debug!("vsock: connection {}:{} timed out", k.0, k.1);
            self.kill(k, true);
        }
    }

    fn rearm_timer(&mut self) {
        let need = !self.host_pending.is_empty()
            || self.conns.values().any(|c| matches!(c.state, State::LocalInit { .. } | State::Closing { .. }));
        if need == self.timer_armed {
            return;
        }
        let r = if need { self.timer.reset(TIMER_TICK, Some(TIMER_TICK)) } else { self.timer.clear() };
        match r {
            Ok(()) => self.timer_armed = need,
            Err(e) => tracing::warn!("vsock: timer: {e}"),
        }
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg.uds_path);
    }
}

/// Writes the next packet of `conn` into `buf`. `Ok(None)`: nothing to
/// send after all (the buffer goes back to the queue).
fn fill_rx(
    conn: &mut Connection,
    scratch: &mut [u8],
    buf: &mut RxBuffer<'_>,
    close_deadline: Instant,
) -> Result<Option<u32>, ConnectionError> {
    // At most: an EOF turned into a SHUTDOWN.
    for _ in 0..2 {
        match conn.next_rx() {
            None => return Ok(None),
            Some(RxKind::Control(op, flags)) => {
                let h = conn.header(op, flags);
                return Ok(Some(write_rx(buf, &h, &[])));
            }
            Some(RxKind::Data) => {
                let max = buf.capacity().min(conn.peer_credit() as usize).min(scratch.len());
                if max == 0 {
                    tracing::warn!("vsock: guest rx buffer has no room for data");
                    return Ok(Some(0));
                }
                let n = loop {
                    match conn.stream.read(&mut scratch[..max]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            conn.readable = false;
                            return Ok(None);
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                if n == 0 {
                    conn.readable = false;
                    conn.host_eof = true;
                    if conn.host_hup {
                        conn.queue_shutdown(SHUTDOWN_BOTH);
                        conn.state = State::Closing { deadline: close_deadline };
                    } else {
                        conn.queue_shutdown(SHUTDOWN_SEND);
                    }
                    continue;
                }
                let h = conn.header(Op::Rw, 0);
                let len = write_rx(buf, &h, &scratch[..n]);
                conn.sent_to_guest(n);
                return Ok(Some(len));
            }
        }
    }
    Ok(None)
}

fn write_rx(buf: &mut RxBuffer<'_>, h: &Header, data: &[u8]) -> u32 {
    buf.write(h, data).unwrap_or_else(|e| {
        tracing::warn!("vsock: cannot write rx packet: {e}");
        0
    })
}

/// Why a host connection was refused before it reached a guest port.
#[derive(Debug, thiserror::Error)]
enum ConnectRefused {
    #[error("closed before CONNECT")]
    Closed,
    #[error("CONNECT line too long")]
    TooLong,
    #[error(transparent)]
    Line(#[from] rayos_contract::hybrid::HybridError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Connects to the unix socket at `path` without blocking: a listener
/// whose backlog is full fails with EAGAIN instead of stalling the device.
fn connect_nonblocking(path: &OsStr) -> std::io::Result<UnixStream> {
    let bytes = path.as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "socket path too long or not a path"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let r = unsafe { libc::connect(sock.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(sock))
}
