//! Driver for the `vsock_packet` fuzz target (and for the property test in
//! `tests`, which runs it on pseudo-random inputs in every `cargo test`):
//! a byte string becomes guest TX chains of arbitrary shape and contents,
//! guest RX buffers of arbitrary shape, and host socket traffic, all fed to
//! a real [`Muxer`]. Checked: nothing panics, and every packet the device
//! writes for the guest is well formed (credit is checked by the unit
//! tests, where the guest's view is known exactly).

use arbitrary::Unstructured;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::muxer::{Muxer, MuxerConfig};
use super::packet::{Header, Op, HOST_CID, TYPE_STREAM};

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 16;
const MEM_SIZE: usize = 0x4_0000;
/// Descriptor buffers live here and above.
const DATA_BASE: u64 = 0x1_0000;
/// The host port with a listener.
const LISTEN_PORT: u32 = 1024;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A split ring laid out in guest memory as a driver would.
pub struct GuestRing {
    pub queue: Queue,
    desc: u64,
    avail: u64,
    used: u64,
    next_avail: u16,
    next_used: u16,
}

impl GuestRing {
    /// A ready queue of `size` entries whose rings start at `base`.
    pub fn new(size: u16, base: u64) -> GuestRing {
        let (desc, avail, used) = (base, base + 0x1000, base + 0x2000);
        let mut queue = Queue::new(size).expect("power-of-two queue size");
        queue.set_size(size);
        queue.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        queue.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        queue.set_ready(true);
        GuestRing { queue, desc, avail, used, next_avail: 0, next_used: 0 }
    }

    /// Writes descriptors `(addr, len, flags)` at table index `first`
    /// onwards, chained with NEXT where the flags say so, and publishes the
    /// chain.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, first: u16, descs: &[(u64, u32, u16)]) {
        let size = self.queue.size();
        for (i, (addr, len, flags)) in descs.iter().enumerate() {
            let idx = (first + i as u16) % size;
            let next = (idx + 1) % size;
            let d = self.desc + idx as u64 * 16;
            let _ = mem.write_obj(*addr, GuestAddress(d));
            let _ = mem.write_obj(*len, GuestAddress(d + 8));
            let _ = mem.write_obj(*flags, GuestAddress(d + 12));
            let _ = mem.write_obj(next, GuestAddress(d + 14));
        }
        let slot = self.next_avail % size;
        let _ = mem.write_obj(first % size, GuestAddress(self.avail + 4 + slot as u64 * 2));
        self.next_avail = self.next_avail.wrapping_add(1);
        let _ = mem.write_obj(self.next_avail, GuestAddress(self.avail + 2));
    }

    /// Used elements added since the last call: (head, len).
    pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap_or(self.next_used);
        let mut out = Vec::new();
        while self.next_used != idx {
            let e = self.used + 4 + (self.next_used % self.queue.size()) as u64 * 8;
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap_or(0);
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap_or(0);
            out.push((id, len));
            self.next_used = self.next_used.wrapping_add(1);
        }
        out
    }
}

/// Runs one fuzz input. Panics only when an invariant breaks.
pub fn run_vsock_input(data: &[u8]) {
    let dir = match tempfile_dir() {
        Some(d) => d,
        None => return,
    };
    let uds = dir.join("v.sock");
    let port_listener = UnixListener::bind(format!("{}_{LISTEN_PORT}", uds.display())).ok();
    if let Some(l) = &port_listener {
        let _ = l.set_nonblocking(true);
    }
    let mut cfg = MuxerConfig::new(GUEST_CID, &uds);
    cfg.buf_alloc = 4096;
    cfg.max_connections = 8;
    let Ok(mut muxer) = Muxer::new(cfg) else { return };
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else { return };
    let mut tx = GuestRing::new(QSIZE, 0);
    let mut rx = GuestRing::new(QSIZE, 0x4000);
    let mut host_streams: Vec<UnixStream> = Vec::new();
    let mut input = Unstructured::new(data);
    let mut next_desc: u16 = 0;
    // Capacity of the RX chain the device holds in each slot, if any.
    let mut rx_slots: [Option<u32>; 4] = [None; 4];

    while !input.is_empty() {
        let op = input.arbitrary::<u8>().unwrap_or(0);
        match op % 5 {
            0 | 1 => {
                // A guest TX chain: 1 to 3 descriptors of fuzzed length and
                // flags; the first holds a header biased towards validity.
                let n = 1 + (input.arbitrary::<u8>().unwrap_or(0) % 3) as usize;
                let mut descs = Vec::new();
                for i in 0..n {
                    let len = input.arbitrary::<u16>().unwrap_or(44) as u32 % 0x2000;
                    let flags = input.arbitrary::<u8>().unwrap_or(0) as u16 & F_WRITE;
                    let addr = DATA_BASE + (i as u64) * 0x2000;
                    descs.push((addr, len, flags | if i + 1 < n { F_NEXT } else { 0 }));
                }
                let sel = input.arbitrary::<u8>().unwrap_or(0);
                let hdr = Header {
                    src_cid: if sel & 1 == 0 { GUEST_CID } else { input.arbitrary::<u32>().unwrap_or(0) as u64 },
                    dst_cid: if sel & 2 == 0 { HOST_CID } else { input.arbitrary::<u32>().unwrap_or(0) as u64 },
                    src_port: 5000 + (input.arbitrary::<u8>().unwrap_or(0) % 4) as u32,
                    dst_port: if sel & 4 == 0 { LISTEN_PORT } else { input.arbitrary::<u32>().unwrap_or(0) },
                    len: if sel & 8 == 0 {
                        input.arbitrary::<u16>().unwrap_or(0) as u32
                    } else {
                        input.arbitrary::<u32>().unwrap_or(0)
                    },
                    type_: if sel & 16 == 0 { TYPE_STREAM } else { input.arbitrary::<u16>().unwrap_or(0) },
                    op: (input.arbitrary::<u8>().unwrap_or(0) % 9) as u16,
                    flags: input.arbitrary::<u8>().unwrap_or(0) as u32,
                    buf_alloc: input.arbitrary::<u16>().unwrap_or(0) as u32,
                    fwd_cnt: input.arbitrary::<u16>().unwrap_or(0) as u32,
                };
                let _ = mem.write_slice(&hdr.to_bytes(), GuestAddress(DATA_BASE));
                let payload = input.bytes(input.len().min(64)).unwrap_or_default().to_vec();
                let _ = mem.write_slice(&payload, GuestAddress(DATA_BASE + 44));
                let _ = mem.write_slice(&payload, GuestAddress(DATA_BASE + 0x2000));
                tx.publish(&mem, next_desc, &descs);
                next_desc = next_desc.wrapping_add(n as u16) % QSIZE;
                muxer.process_tx(&mem, &mut tx.queue);
                let used = tx.take_used(&mem);
                assert!(used.iter().all(|&(_, len)| len == 0), "tx used length must be 0");
            }
            2 => {
                // Guest RX buffers, mostly well formed. Like a real driver,
                // the harness never offers a descriptor the device still
                // owns: four chain slots at heads 8, 10, 12 and 14, each
                // with its own buffer area, so every used element can be
                // checked against the packet written into its own buffer.
                let shape = input.arbitrary::<u8>().unwrap_or(0);
                if let Some(slot) = rx_slots.iter().position(Option::is_none) {
                    let base = DATA_BASE + 0x8000 + slot as u64 * 0x2000;
                    let descs: Vec<(u64, u32, u16)> = match shape % 4 {
                        0 => vec![(base, 44, F_WRITE | F_NEXT), (base + 0x1000, 4096, F_WRITE)],
                        1 => vec![(base, 44 + 4096, F_WRITE)],
                        2 => vec![(base, (shape as u32) % 64, F_WRITE)],
                        _ => vec![(base, 44, F_NEXT), (base + 0x1000, (shape as u32 % 64) * 64, 0)],
                    };
                    // Payload bytes the chain can take after the header;
                    // shape 3's header descriptor is read-only, so nothing.
                    let cap = match shape % 4 {
                        0 | 1 => 4096,
                        2 => (shape as u32 % 64).saturating_sub(44),
                        _ => 0,
                    };
                    // Stale bytes from an earlier packet must not pass for
                    // this one's header.
                    let _ = mem.write_slice(&[0xee; 44], GuestAddress(base));
                    rx.publish(&mem, 8 + slot as u16 * 2, &descs);
                    rx_slots[slot] = Some(cap);
                }
                muxer.process_rx(&mem, &mut rx.queue);
                for (head, len) in rx.take_used(&mem) {
                    assert!((8..16).contains(&head) && head % 2 == 0, "rx used head {head} was never offered");
                    let slot = (head as usize - 8) / 2;
                    let cap = rx_slots[slot].take().expect("rx used element for a buffer the device did not own");
                    if len == 0 {
                        continue;
                    }
                    let base = DATA_BASE + 0x8000 + slot as u64 * 0x2000;
                    assert!(len >= 44 && len - 44 <= cap, "rx used length {len} for capacity {cap}");
                    let mut h = [0u8; 44];
                    let _ = mem.read_slice(&mut h, GuestAddress(base));
                    let f = |a: usize, b: usize| h[a..b].iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64);
                    assert_eq!(f(0, 8), HOST_CID, "rx packet source CID");
                    assert_eq!(f(8, 16), GUEST_CID, "rx packet destination CID");
                    let (plen, op) = (f(24, 28) as u32, f(30, 32) as u16);
                    assert_eq!(plen + 44, len, "rx header len matches used length");
                    if op != Op::Rw as u16 {
                        assert_eq!(plen, 0, "control packets carry no data");
                    }
                }
            }
            3 => {
                // Host side: accept guest connections, write or close.
                if let Some(l) = &port_listener {
                    while let Ok((s, _)) = l.accept() {
                        let _ = s.set_nonblocking(true);
                        host_streams.push(s);
                    }
                }
                let what = input.arbitrary::<u8>().unwrap_or(0);
                if !host_streams.is_empty() {
                    let i = what as usize % host_streams.len();
                    if what & 0x80 != 0 {
                        host_streams.swap_remove(i);
                    } else {
                        let n = input.arbitrary::<u8>().unwrap_or(0) as usize * 16;
                        let _ = host_streams[i].write(&vec![0x5a; n]);
                    }
                }
                muxer.process_host_events();
            }
            _ => {
                // Host connects and asks for a guest port.
                if let Ok(mut s) = UnixStream::connect(&uds) {
                    let line = input.bytes(input.len().min(12)).unwrap_or_default().to_vec();
                    let _ = s.write_all(b"CONNECT ");
                    let _ = s.write_all(&line);
                    let _ = s.write_all(b"\n");
                    let _ = s.set_nonblocking(true);
                    host_streams.push(s);
                }
                muxer.process_host_events();
                muxer.process_host_events();
            }
        }
    }
    drop(muxer);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> Option<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "rayos-vsock-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).ok()?;
    Some(d)
}
