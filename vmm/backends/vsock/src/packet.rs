//! Guest packets: parsing and validation of TX chains, and the header of the
//! packets the device writes into RX chains (virtio 1.2, 5.10.6).
//!
//! Everything here treats the guest as hostile: a TX chain is accepted only
//! if its header fits its head descriptor, its `len` fits both the data
//! descriptors and [`MAX_PKT_DATA`], and its CIDs are the ones this device
//! stands between (guest CID to [`HOST_CID`]). Type and op are checked by
//! the muxer, which answers a bad one with RST.
//!
//! A TX payload may follow the header in the head descriptor (Linux 6.2 and
//! later for small packets) and may be scattered over any number of further
//! descriptors: Linux sends a large write as an skb with page fragments,
//! one descriptor each (seen with a 6.12 guest: a bridged app's buffer
//! updates arrive as a header plus several 4 KiB pages). The payload is
//! kept as the list of guest-memory pieces, in order, without a copy.

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, VolatileSlice};

/// CID of the host: the only destination the guest may address.
pub const HOST_CID: u64 = 2;
/// `type` of a stream socket, the only type RayOS carries.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload of one packet, either direction.
pub const MAX_PKT_DATA: u32 = 64 * 1024;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Packet operations (virtio 1.2, 5.10.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

impl Op {
    /// The op with wire value `v`, if there is one.
    pub fn from_u16(v: u16) -> Option<Op> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// Why a TX chain was refused.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("malformed descriptor chain: {0}")]
    Chain(virtio_vsock::packet::Error),
    #[error("empty TX descriptor chain")]
    EmptyChain,
    #[error("device-writable descriptor in a TX chain")]
    WriteOnly,
    #[error("head descriptor of {0} bytes cannot hold the 44-byte header")]
    HeaderTooSmall(u32),
    #[error("payload length {0} is over the limit of {MAX_PKT_DATA} bytes")]
    TooLong(u32),
    #[error("header announces {len} payload bytes but the chain holds {have}")]
    ShortPayload { len: u32, have: u32 },
    #[error("TX descriptor outside guest memory: {0}")]
    Memory(GuestMemoryError),
    #[error("source CID {got} is not the guest's CID {want}")]
    SrcCid { got: u64, want: u64 },
    #[error("destination CID {0} is not the host (CID 2)")]
    DstCid(u64),
}

/// A packet header in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// The 44-byte little-endian wire form.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parses the wire form (at least 44 bytes).
    pub fn from_bytes(b: &[u8]) -> Option<Header> {
        let b = b.get(..PKT_HEADER_SIZE)?;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or_default());
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }
}

/// A validated guest packet: its header and exactly `len` bytes of guest
/// memory holding the payload, in one or more pieces (none when `len` is 0).
pub struct TxPacket<'a> {
    pub hdr: Header,
    pub data: Vec<VolatileSlice<'a, ()>>,
}

impl TxPacket<'_> {
    /// Payload bytes (the header's `len`).
    pub fn data_len(&self) -> usize {
        self.data.iter().map(|s| s.len()).sum()
    }
}

/// Parses and validates the TX chain `chain` of a guest whose CID is
/// `guest_cid`.
pub fn parse_tx<'a>(
    mem: &'a GuestMemoryMmap,
    chain: &mut DescriptorChain<&'a GuestMemoryMmap>,
    guest_cid: u64,
) -> Result<TxPacket<'a>, PacketError> {
    let head = chain.next().ok_or(PacketError::EmptyChain)?;
    if head.is_write_only() {
        return Err(PacketError::WriteOnly);
    }
    if (head.len() as usize) < PKT_HEADER_SIZE {
        return Err(PacketError::HeaderTooSmall(head.len()));
    }
    let mut raw = [0u8; PKT_HEADER_SIZE];
    mem.read_slice(&mut raw, head.addr()).map_err(PacketError::Memory)?;
    let hdr = Header::from_bytes(&raw).ok_or(PacketError::HeaderTooSmall(head.len()))?;
    if hdr.src_cid != guest_cid {
        return Err(PacketError::SrcCid { got: hdr.src_cid, want: guest_cid });
    }
    if hdr.dst_cid != HOST_CID {
        return Err(PacketError::DstCid(hdr.dst_cid));
    }
    if hdr.len > MAX_PKT_DATA {
        return Err(PacketError::TooLong(hdr.len));
    }
    let mut data = Vec::new();
    let mut need = hdr.len as usize;
    let mut take = |addr: GuestAddress, len: usize, need: &mut usize| -> Result<(), PacketError> {
        let n = len.min(*need);
        // A range may span two memory regions (around the 32-bit hole).
        for piece in GuestMemoryBackend::get_slices(mem, addr, n) {
            data.push(piece.map_err(PacketError::Memory)?);
        }
        *need -= n;
        Ok(())
    };
    let in_head = head.len() as usize - PKT_HEADER_SIZE;
    let after_header =
        head.addr().checked_add(PKT_HEADER_SIZE as u64).ok_or(PacketError::HeaderTooSmall(head.len()))?;
    take(after_header, in_head, &mut need)?;
    while need > 0 {
        let Some(d) = chain.next() else { break };
        if d.is_write_only() {
            return Err(PacketError::WriteOnly);
        }
        take(d.addr(), d.len() as usize, &mut need)?;
    }
    if need > 0 {
        return Err(PacketError::ShortPayload { len: hdr.len, have: hdr.len - need as u32 });
    }
    Ok(TxPacket { hdr, data })
}

/// Where the device writes one packet for the guest: the header slice and
/// the payload room (possibly none).
pub struct RxBuffer<'a> {
    pkt: VsockPacket<'a, ()>,
}

impl<'a> RxBuffer<'a> {
    /// Checks that the RX chain `chain` can take a packet.
    pub fn new(
        mem: &'a GuestMemoryMmap,
        chain: &mut DescriptorChain<&'a GuestMemoryMmap>,
    ) -> Result<Self, PacketError> {
        let pkt = VsockPacket::from_rx_virtq_chain(mem, chain, MAX_PKT_DATA).map_err(PacketError::Chain)?;
        Ok(RxBuffer { pkt })
    }

    /// Room for payload, in bytes.
    pub fn capacity(&self) -> usize {
        self.pkt.data_slice().map_or(0, |s| s.len()).min(MAX_PKT_DATA as usize)
    }

    /// Writes `hdr` and, for RW, `data` (at most [`Self::capacity`] bytes);
    /// returns the length for the used ring.
    pub fn write(&mut self, hdr: &Header, data: &[u8]) -> Result<u32, PacketError> {
        let n = data.len().min(self.capacity());
        if n > 0 {
            // capacity() > 0 means the slice exists.
            if let Some(s) = self.pkt.data_slice() {
                s.copy_from(&data[..n]);
            }
        }
        let hdr = Header { len: n as u32, ..*hdr };
        self.pkt.set_header_from_raw(&hdr.to_bytes()).map_err(PacketError::Chain)?;
        Ok((PKT_HEADER_SIZE + n) as u32)
    }
}
