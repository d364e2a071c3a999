//! One stream between a guest port and a host unix socket: its state, its
//! credit accounting in both directions and its buffer of guest data not yet
//! taken by the host socket.
//!
//! Credit (virtio 1.2, 5.10.6.3): the guest tells us its `buf_alloc` and
//! `fwd_cnt` in every packet; we never put more bytes in flight to it than
//! `buf_alloc - (rx_cnt - fwd_cnt)`. In the other direction we advertise
//! [`Connection::buf_alloc`] bytes and count in `fwd_cnt` what the host
//! socket has taken; a guest that sends beyond that is reset.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vm_memory::VolatileSlice;
use vmm_sys_util::epoll::EventSet;

use super::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Errors that end a connection (the muxer resets it).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("guest sent {len} bytes with only {free} bytes of credit left")]
    CreditViolation { len: usize, free: usize },
    #[error("host socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The host asked for a guest port; REQUEST is sent or queued and the
    /// guest must answer RESPONSE before the deadline.
    LocalInit { deadline: Instant },
    /// Data flows.
    Established,
    /// One side is gone: the guest got (or is getting) SHUTDOWN with both
    /// flags, or asked for it; RST goes out at the deadline at the latest.
    Closing { deadline: Instant },
}

/// Control packets waiting for an RX buffer.
pub mod pending {
    pub const REQUEST: u8 = 1 << 0;
    pub const RESPONSE: u8 = 1 << 1;
    pub const SHUTDOWN: u8 = 1 << 2;
    pub const CREDIT_UPDATE: u8 = 1 << 3;
    pub const CREDIT_REQUEST: u8 = 1 << 4;
}

/// The next packet a connection wants to send to the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum RxKind {
    Control(Op, u32),
    Data,
}

pub struct Connection {
    pub stream: UnixStream,
    /// Epoll token of `stream`.
    pub token: u64,
    /// Port on the host side (source of our packets).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    pub guest_cid: u64,
    pub state: State,
    /// Bytes of guest data we accept in flight.
    pub buf_alloc: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// Guest payload bytes the host socket has taken.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Guest data the host socket has not taken yet.
    tx_buf: VecDeque<u8>,
    pub pending: u8,
    shutdown_flags: u32,
    /// SHUTDOWN flags the guest sent.
    pub peer_shutdown: u32,
    /// The host socket may have bytes (or EOF) for the guest.
    pub readable: bool,
    /// The host socket read EOF: nothing more comes from the host.
    pub host_eof: bool,
    /// The host socket hung up (both directions) or failed.
    pub host_hup: bool,
    /// The host socket's write side is shut (after the guest's SHUTDOWN SEND).
    host_write_shut: bool,
    credit_requested: bool,
    /// Interest currently registered on epoll (None: not registered).
    pub registered: Option<EventSet>,
    /// Queued in the muxer's RX work list.
    pub in_rx_work: bool,
}

impl Connection {
    /// A connection from guest port `peer_port` to host port `local_port`,
    /// created by the guest's REQUEST: RESPONSE is queued.
    pub fn guest_initiated(
        stream: UnixStream,
        token: u64,
        guest_cid: u64,
        local_port: u32,
        req: &Header,
        buf_alloc: u32,
    ) -> Self {
        let mut c = Self::new(stream, token, guest_cid, local_port, req.src_port, State::Established, buf_alloc);
        c.update_peer_credit(req.buf_alloc, req.fwd_cnt);
        c.pending = pending::RESPONSE;
        c
    }

    /// A connection asked for by the host: REQUEST is queued.
    pub fn host_initiated(
        stream: UnixStream,
        token: u64,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        deadline: Instant,
        buf_alloc: u32,
    ) -> Self {
        let mut c =
            Self::new(stream, token, guest_cid, local_port, peer_port, State::LocalInit { deadline }, buf_alloc);
        c.pending = pending::REQUEST;
        c
    }

    fn new(
        stream: UnixStream,
        token: u64,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        state: State,
        buf_alloc: u32,
    ) -> Self {
        Connection {
            stream,
            token,
            local_port,
            peer_port,
            guest_cid,
            state,
            buf_alloc,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            tx_buf: VecDeque::new(),
            pending: 0,
            shutdown_flags: 0,
            peer_shutdown: 0,
            readable: false,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            credit_requested: false,
            registered: None,
            in_rx_work: false,
        }
    }

    /// Header of a packet from this connection to the guest.
    pub fn header(&mut self, op: Op, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Takes the guest's view of its receive buffer from any of its packets.
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes we may still send to the guest. A guest claiming to have
    /// consumed more than we sent gets no credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records `n` payload bytes sent to the guest.
    pub fn sent_to_guest(&mut self, n: usize) {
        self.rx_cnt += Wrapping(n as u32);
    }

    /// Room left in our advertised buffer.
    pub fn free_space(&self) -> usize {
        (self.buf_alloc as usize).saturating_sub(self.tx_buf.len())
    }

    /// Bytes of guest data waiting for the host socket.
    pub fn tx_buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Queues a SHUTDOWN with `flags` for the guest.
    pub fn queue_shutdown(&mut self, flags: u32) {
        self.shutdown_flags |= flags;
        self.pending |= pending::SHUTDOWN;
    }

    /// Takes the payload of a guest RW packet: into the host socket as far
    /// as it goes, the rest into our buffer (within the credit we gave).
    pub fn recv_guest_data(&mut self, data: &[VolatileSlice<'_, ()>]) -> Result<(), ConnectionError> {
        let len = data.iter().map(|s| s.len()).sum();
        let free = self.free_space();
        if len > free {
            return Err(ConnectionError::CreditViolation { len, free });
        }
        let mut bytes = vec![0u8; len];
        let mut at = 0;
        for piece in data {
            piece.copy_to(&mut bytes[at..at + piece.len()]);
            at += piece.len();
        }
        let mut off = 0;
        if self.tx_buf.is_empty() && !self.host_hup {
            while off < len {
                match self.stream.write(&bytes[off..]) {
                    Ok(0) => break,
                    Ok(n) => off += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            self.fwd_cnt += Wrapping(off as u32);
        }
        self.tx_buf.extend(&bytes[off..]);
        self.check_credit_update();
        Ok(())
    }

    /// Writes buffered guest data to the host socket until it would block.
    pub fn flush(&mut self) -> Result<(), ConnectionError> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.check_credit_update();
        self.maybe_shut_host_write();
        Ok(())
    }

    /// After the guest's SHUTDOWN SEND and once its data is delivered, the
    /// host reads EOF.
    pub fn maybe_shut_host_write(&mut self) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && self.tx_buf.is_empty() && !self.host_write_shut {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            self.host_write_shut = true;
        }
    }

    /// Queues a CREDIT_UPDATE once the guest's view of our free space is
    /// a quarter of the buffer behind.
    fn check_credit_update(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= self.buf_alloc / 4 {
            self.pending |= pending::CREDIT_UPDATE;
        }
    }

    /// The guest asked for our credit.
    pub fn credit_requested_by_guest(&mut self) {
        self.pending |= pending::CREDIT_UPDATE;
    }

    /// Host data may be sent now.
    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && !self.host_eof
            && self.peer_credit() > 0
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.pending != 0 || (self.readable && self.can_send_data())
    }

    /// The next packet for the guest, control packets first. The caller
    /// sends it (for `Data`, reading the socket), so a `Control` is taken
    /// off the pending set here.
    pub fn next_rx(&mut self) -> Option<RxKind> {
        for (bit, op) in [
            (pending::REQUEST, Op::Request),
            (pending::RESPONSE, Op::Response),
            (pending::CREDIT_UPDATE, Op::CreditUpdate),
            (pending::CREDIT_REQUEST, Op::CreditRequest),
        ] {
            if self.pending & bit != 0 {
                self.pending &= !bit;
                return Some(RxKind::Control(op, 0));
            }
        }
        if self.readable && self.can_send_data() {
            return Some(RxKind::Data);
        }
        // SHUTDOWN goes after any data the host wrote before its EOF.
        if self.pending & pending::SHUTDOWN != 0 {
            self.pending &= !pending::SHUTDOWN;
            return Some(RxKind::Control(Op::Shutdown, self.shutdown_flags));
        }
        None
    }

    /// The host has data but the guest has no room: ask once for credit.
    pub fn note_credit_stall(&mut self) {
        if self.readable && self.state == State::Established && self.peer_credit() == 0 && !self.credit_requested {
            self.credit_requested = true;
            self.pending |= pending::CREDIT_REQUEST;
        }
    }

    /// Interest this connection needs on epoll.
    pub fn interest(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if !self.readable
            && !self.host_eof
            && self.state == State::Established
            && self.peer_shutdown & SHUTDOWN_RCV == 0
        {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// The RX credit counters, for tests and logs.
    pub fn counters(&self) -> (u32, u32, u32) {
        (self.rx_cnt.0, self.fwd_cnt.0, self.peer_credit())
    }
}
