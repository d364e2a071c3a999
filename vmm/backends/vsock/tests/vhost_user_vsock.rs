//! Tier 1: the vsock backend (`rayos_vsock::serve`) behind a real
//! vhost-user socket, driven by rayos-vmm's vhost-user frontend (the one
//! RayOS attaches it with) over split rings in shared guest RAM, and real
//! unix sockets on the host side; and the backend's end when its frontend
//! goes away, driven by the vhost crate's own frontend.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rayos_vmm::memory::GuestRam;
use rayos_vmm::virtio::transport::common_config::QueueState;
use rayos_vmm::virtio::vhost_user::VhostUserDevice;
use rayos_vmm::virtio::{Activation, VirtioDevice, VIRTIO_F_VERSION_1};
use rayos_vsock::{self as vsock, Header, MuxerConfig, Op, ServeEnd, ShutdownTrigger, HOST_CID, TYPE_STREAM};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

/// Waits until the backend listens on `path`.
fn wait_for(path: &Path) {
    rayos_test_kit::wait::path_appears(path, Duration::from_secs(10)).expect("the backend's socket");
}

/// Waits up to `timeout` for the backend to signal `call` (a queue's
/// interrupt); true if it did.
fn wait_call(call: &EventFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd: call.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid, initialised pollfd and the count passed is 1.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    n == 1 && call.read().is_ok()
}

/// A split virtqueue (virtio 1.2, 2.7) laid out in guest RAM as a driver
/// does: descriptor table at `desc`, available ring 4 KiB after it, used
/// ring 8 KiB after it.
struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_avail: u16,
}

impl Ring {
    fn new(size: u16, base: u64) -> Self {
        Ring { size, desc: base, avail: base + 0x1000, used: base + 0x2000, next_avail: 0 }
    }

    fn write_desc(&self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = GuestAddress(self.desc + u64::from(i) * 16);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, d).unwrap();
    }

    /// Puts chain `head` in the available ring, then publishes the new index.
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.next_avail % self.size);
        mem.write_obj(head, GuestAddress(self.avail + 4 + slot * 2)).unwrap();
        self.next_avail = self.next_avail.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        mem.write_obj(self.next_avail, GuestAddress(self.avail + 2)).unwrap();
    }

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (descriptor id, bytes written) of used element `n`.
    fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let e = self.used + 4 + u64::from(n % self.size) * 8;
        (mem.read_obj(GuestAddress(e)).unwrap(), mem.read_obj(GuestAddress(e + 4)).unwrap())
    }
}

const CID: u64 = 42;
const RX: usize = 0;
const TX: usize = 1;

struct Driver {
    rings: Vec<Ring>,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    tx_next: u16,
    tx_done: u16,
    rx_next: u16,
    rx_seen: u16,
}

const RX_BUF: u64 = 0x10_0000;
const TX_BUF: u64 = 0x20_0000;

impl Driver {
    fn wait_used(&self, mem: &GuestMemoryMmap, q: usize, want: u16) {
        let t0 = Instant::now();
        while self.rings[q].used_idx(mem) != want {
            assert!(t0.elapsed() < Duration::from_secs(10), "queue {q}: used index never reached {want}");
            wait_call(&self.calls[q], Duration::from_millis(100));
        }
    }

    fn send(&mut self, mem: &GuestMemoryMmap, hdr: Header, data: &[u8]) {
        let slot = self.tx_next % 64;
        let (h, d) = (TX_BUF + slot as u64 * 0x2000, TX_BUF + slot as u64 * 0x2000 + 0x100);
        mem.write_slice(&Header { len: data.len() as u32, ..hdr }.to_bytes(), GuestAddress(h)).unwrap();
        mem.write_slice(data, GuestAddress(d)).unwrap();
        let head = slot * 2;
        let ring = &mut self.rings[TX];
        if data.is_empty() {
            ring.write_desc(mem, head, h, 44, 0, 0);
        } else {
            ring.write_desc(mem, head, h, 44, VIRTQ_DESC_F_NEXT, head + 1);
            ring.write_desc(mem, head + 1, d, data.len() as u32, 0, 0);
        }
        ring.publish(mem, head);
        self.kicks[TX].write(1).unwrap();
        self.tx_next += 1;
        self.tx_done += 1;
        self.wait_used(mem, TX, self.tx_done);
    }

    /// Posts RX buffers (one descriptor each: header and 4 KiB, as Linux
    /// 6.2+ does).
    fn give_rx(&mut self, mem: &GuestMemoryMmap, n: u16) {
        for _ in 0..n {
            let slot = self.rx_next % 128;
            self.rings[RX].write_desc(mem, slot, RX_BUF + slot as u64 * 0x2000, 44 + 4096, VIRTQ_DESC_F_WRITE, 0);
            self.rings[RX].publish(mem, slot);
            self.rx_next += 1;
        }
        self.kicks[RX].write(1).unwrap();
    }

    fn recv(&mut self, mem: &GuestMemoryMmap) -> (Header, Vec<u8>) {
        self.wait_used(mem, RX, self.rx_seen + 1);
        let (id, len) = self.rings[RX].used_elem(mem, self.rx_seen);
        self.rx_seen += 1;
        let mut b = vec![0u8; len as usize];
        mem.read_slice(&mut b, GuestAddress(RX_BUF + id as u64 * 0x2000)).unwrap();
        let h = Header::from_bytes(&b).unwrap();
        assert_eq!((h.src_cid, h.dst_cid, h.len as usize + 44), (HOST_CID, CID, b.len()));
        (h, b[44..].to_vec())
    }
}

fn pkt(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 65536,
        ..Header::default()
    }
}

#[test]
fn vsock_backend_over_vhost_user() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vsock.vhost");
    let uds = dir.path().join("vsock.uds");
    let trigger = ShutdownTrigger::default();
    let (s, u, t) = (sock.clone(), uds.clone(), trigger.clone());
    let server = std::thread::spawn(move || {
        // Idle host connections stay pending long enough to be counted below.
        let mut cfg = MuxerConfig::new(CID, &u);
        cfg.connect_timeout = Duration::from_secs(30);
        vsock::serve(&s, cfg, &t)
    });
    wait_for(&sock);

    let ram = GuestRam::new(16 << 20).unwrap();
    let mut dev = VhostUserDevice::connect("vsock", &sock, 19, vec![256; 3], None, &ram).unwrap();
    assert_ne!(dev.features() & (1 << VIRTIO_F_VERSION_1), 0);
    let mut cfg = [0u8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), CID, "config space is the guest CID");
    {
        use std::os::unix::fs::MetadataExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&sock), 0o600, "the vhost-user socket (guest RAM goes through it) is this user's only");
        assert_eq!(mode(&uds), 0o600, "the hybrid socket (the guest's ports) is this user's only");
    }

    let mem = &ram.memory;
    let rings: Vec<Ring> = (0..3).map(|i| Ring::new(256, 0x1_0000 + i * 0x4000)).collect();
    let queues = rings
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                i,
                QueueState {
                    max_size: 256,
                    size: 256,
                    ready: true,
                    desc: r.desc,
                    driver: r.avail,
                    device: r.used,
                    msix_vector: i as u16,
                },
            )
        })
        .collect();
    let kicks: Vec<EventFd> = (0..3).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    let calls: Vec<EventFd> = (0..3).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    dev.activate(Activation { features: 1 << VIRTIO_F_VERSION_1, mem, queues, kicks: &kicks, calls: &calls }).unwrap();
    let mut d = Driver { rings, kicks, calls, tx_next: 0, tx_done: 0, rx_next: 0, rx_seen: 0 };
    d.give_rx(mem, 16);

    // Guest to host port 1234.
    let l = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    d.send(mem, pkt(Op::Request, 5000, 1234), &[]);
    let (h, _) = d.recv(mem);
    assert_eq!((h.op, h.src_port, h.dst_port), (Op::Response as u16, 1234, 5000));
    let (mut host, _) = l.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    d.send(mem, pkt(Op::Rw, 5000, 1234), b"from the guest");
    let mut b = [0u8; 14];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"from the guest");
    host.write_all(b"from the host").unwrap();
    let (h, data) = d.recv(mem);
    assert_eq!((h.op, data.as_slice()), (Op::Rw as u16, &b"from the host"[..]));

    // Guest port 1234 unserved on the host: RST.
    d.send(mem, pkt(Op::Request, 5001, 4321), &[]);
    let (h, _) = d.recv(mem);
    assert_eq!((h.op, h.src_port, h.dst_port), (Op::Rst as u16, 4321, 5001));

    // Host to guest port 52.
    let mut hc = UnixStream::connect(&uds).unwrap();
    hc.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    hc.write_all(b"CONNECT 52\n").unwrap();
    let (req, _) = d.recv(mem);
    assert_eq!((req.op, req.dst_port), (Op::Request as u16, 52));
    d.send(mem, pkt(Op::Response, 52, req.src_port), &[]);
    let want = format!("OK {}\n", req.src_port);
    let mut b = vec![0u8; want.len()];
    hc.read_exact(&mut b).unwrap();
    assert_eq!(b, want.as_bytes());

    // Data on the host-initiated stream, then the guest closes it.
    hc.write_all(b"ping").unwrap();
    let (h, data) = d.recv(mem);
    assert_eq!((h.op, h.dst_port, data.as_slice()), (Op::Rw as u16, 52, &b"ping"[..]));
    d.send(mem, Header { flags: 3, ..pkt(Op::Shutdown, 52, req.src_port) }, &[]);
    let (h, _) = d.recv(mem);
    assert_eq!((h.op, h.dst_port), (Op::Rst as u16, 52));
    let mut b = [0u8; 4];
    assert_eq!(hc.read(&mut b).unwrap(), 0, "host sees EOF");

    // One process leaving connections idle before CONNECT gets at most
    // MAX_PENDING_PER_PEER of them; the next is closed at once.
    let idle: Vec<UnixStream> = (0..vsock::MAX_PENDING_PER_PEER).map(|_| UnixStream::connect(&uds).unwrap()).collect();
    let mut extra = UnixStream::connect(&uds).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let got = extra.read(&mut b);
    let closed = matches!(got, Ok(0)) || matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed, "the connection past the per-process bound stays open: {got:?}");
    for s in &idle {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let r = (&*s).read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "an idle one within the bound was closed: {r:?}"
        );
    }
    drop(idle);

    // The frontend's socket monitor keeps its own copy of the connection,
    // so end the backend the way the binary does on a signal.
    trigger.shutdown();
    let end = server.join().unwrap().unwrap();
    assert_eq!(end, ServeEnd::Shutdown);
    assert!(!uds.exists(), "the hybrid socket is removed on exit");
    drop(dev);
}

#[test]
fn serve_returns_when_the_frontend_disconnects() {
    use vhost::vhost_user::message::VhostUserProtocolFeatures;
    use vhost::vhost_user::{Frontend, VhostUserFrontend};
    use vhost::VhostBackend;

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vsock.vhost");
    let uds = dir.path().join("vsock.uds");
    let (s, u) = (sock.clone(), uds.clone());
    let server = std::thread::spawn(move || vsock::serve(&s, MuxerConfig::new(7, &u), &ShutdownTrigger::default()));
    wait_for(&sock);
    let mut f = Frontend::connect(&sock, 3).unwrap();
    f.set_owner().unwrap();
    let features = f.get_features().unwrap();
    assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(features & (1 << 29), 0, "EVENT_IDX offered");
    let proto = f.get_protocol_features().unwrap();
    assert!(proto.contains(VhostUserProtocolFeatures::CONFIG));
    f.set_protocol_features(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ).unwrap();
    assert_eq!(f.get_queue_num().unwrap(), 3);
    drop(f);
    assert_eq!(server.join().unwrap().unwrap(), ServeEnd::Disconnected);
    assert!(!uds.exists());
}
