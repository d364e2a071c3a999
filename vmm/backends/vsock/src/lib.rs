//! RayOS's vhost-user-vsock device backend: guest stream sockets carried to
//! host unix sockets ("hybrid vsock").
//!
//! Design:
//! - `packet`: parsing and validation of every guest packet (virtio 1.2,
//!   5.10.6) with `virtio-vsock`'s `VsockPacket`; the guest is untrusted and
//!   a bad packet is refused and logged, never trusted or panicked on.
//! - `connection`: one stream's state machine (LocalInit, Established,
//!   Closing), credit in both directions (5.10.6.3) and a buffer of guest
//!   data bounded by the credit we advertise.
//! - `muxer`: the connection table keyed by (host port, guest port), the
//!   hybrid listener, and one epoll over every host socket.
//! - `backend`: the vhost-user device on `vhost-user-backend` (rx, tx and
//!   event queues; config space = le64 guest CID) and [`serve`], which
//!   serves one frontend connection.
//!
//! Hybrid vsock: the device listens on a unix socket `U`. A guest that
//! connects to CID 2 port P is connected to the unix socket `U_P` (RST if
//! nothing listens there). A host process that connects to `U` and writes
//! `CONNECT <port>\n` reaches guest port `<port>`: the device sends the
//! guest a REQUEST; on its RESPONSE the host reads `OK <host port>\n` and
//! the stream is open; on RST or after a timeout the host socket is closed.
//!
//! Closing: a host EOF becomes SHUTDOWN(SEND), a full hang-up SHUTDOWN with
//! both flags; the guest's SHUTDOWN(SEND) shuts the host socket's write
//! side once its data is delivered; when both directions are done the
//! device sends RST, after a grace period at the latest.
//!
//! Limits: stream sockets only (SEQPACKET and others get RST); a TX packet's
//! payload must sit in one descriptor after the header (or in the header's
//! descriptor), as Linux sends it; the event queue is never used (no live
//! migration, so no TRANSPORT_RESET). Connections survive a vring stop (a
//! paused VM keeps its streams) and are dropped on a device reset
//! (RESET_OWNER).

mod backend;
mod connection;
pub mod fuzzing;
mod muxer;
mod packet;

#[cfg(test)]
mod tests;

pub use backend::{
    serve, BackendError, ServeEnd, ShutdownTrigger, VsockBackend, MUXER_EVENT, NUM_QUEUES, QUEUE_SIZE, VIRTIO_ID_VSOCK,
};
pub use connection::{ConnectionError, State};
pub use muxer::{valid_guest_cid, Muxer, MuxerConfig, MuxerError, MAX_PENDING_PER_PEER};
pub use packet::{
    parse_tx, Header, Op, PacketError, RxBuffer, TxPacket, HOST_CID, MAX_PKT_DATA, SHUTDOWN_RCV, SHUTDOWN_SEND,
    TYPE_STREAM,
};
