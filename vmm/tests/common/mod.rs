//! An in-test vhost-user backend built on vhost-user-backend: one queue;
//! each request is a chain of a readable buffer and a writable one, and the
//! device writes the readable bytes back upper-cased. Plus helpers that lay
//! out a split virtqueue in guest memory the way a driver does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub const CONFIG: &[u8] = b"upper-config";

#[derive(Default)]
pub struct Upper {
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
}

impl VhostUserBackendMut for Upper {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }
    fn max_queue_size(&self) -> usize {
        256
    }
    fn features(&self) -> u64 {
        (1 << 32) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut v = CONFIG.to_vec();
        v.resize(64, 0);
        v[offset as usize..(offset + size) as usize].to_vec()
    }
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> std::io::Result<()> {
        let vring = &vrings[device_event as usize];
        let mem = self.mem.as_ref().expect("memory table before kicks").memory();
        let chains: Vec<_> = vring.get_mut().get_queue_mut().iter(mem.clone()).expect("queue iterator").collect();
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let mut input = Vec::new();
            for d in descs.iter().filter(|d| !d.is_write_only()) {
                let mut b = vec![0u8; d.len() as usize];
                mem.read_slice(&mut b, d.addr()).expect("readable buffer");
                input.extend_from_slice(&b);
            }
            let out = input.to_ascii_uppercase();
            let mut written = 0;
            for d in descs.iter().filter(|d| d.is_write_only()) {
                let n = (d.len() as usize).min(out.len() - written);
                mem.write_slice(&out[written..written + n], d.addr()).expect("writable buffer");
                written += n;
            }
            vring.add_used(head, written as u32).expect("add used");
        }
        vring.signal_used_queue().expect("signal");
        Ok(())
    }
}

/// Starts the backend on a new socket; returns its path once it listens.
pub fn start_backend(dir: &Path) -> PathBuf {
    let path = dir.join("upper.sock");
    let p = path.clone();
    std::thread::spawn(move || {
        let backend = Arc::new(RwLock::new(Upper::default()));
        let mut daemon =
            VhostUserDaemon::new("upper".into(), backend, GuestMemoryAtomic::new(GuestMemoryMmap::new())).unwrap();
        let _ = daemon.serve(&p);
    });
    wait_for(&path);
    path
}

/// Forks a child that serves the `upper` backend in `dir` (so that it can
/// really die or stop) and returns its pid once the socket is there. Only
/// for test binaries holding a single test: no other thread may hold locks
/// at fork time.
pub fn fork_backend(dir: &Path) -> libc::pid_t {
    // SAFETY: the child only runs the backend and exits; the caller's test
    // binary holds a single test, so no other thread holds locks at fork time.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        start_backend(dir);
        std::thread::sleep(Duration::from_secs(120));
        // SAFETY: terminating the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    wait_for(&dir.join("upper.sock"));
    pid
}

pub fn wait_for(path: &Path) {
    rayos_test_kit::wait::path_appears(path, Duration::from_secs(10)).expect("the backend's socket");
}

/// A split virtqueue laid out in guest memory.
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_avail: u16,
}

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;

impl Ring {
    pub fn new(size: u16, base: u64) -> Self {
        Ring { size, desc: base, avail: base + 0x1000, used: base + 0x2000, next_avail: 0 }
    }

    /// The queue's state as a driver sets it up: ready, vector 0, this ring's addresses.
    pub fn queue_state(&self) -> rayos_vmm::virtio::transport::common_config::QueueState {
        rayos_vmm::virtio::transport::common_config::QueueState {
            max_size: self.size,
            size: self.size,
            ready: true,
            desc: self.desc,
            driver: self.avail,
            device: self.used,
            msix_vector: 0,
        }
    }

    pub fn write_desc(&self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + i as u64 * 16;
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(next, GuestAddress(d + 14)).unwrap();
    }

    /// Makes descriptor chain `head` available.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.next_avail % self.size;
        mem.write_obj(head, GuestAddress(self.avail + 4 + slot as u64 * 2)).unwrap();
        self.next_avail = self.next_avail.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        mem.write_obj(self.next_avail, GuestAddress(self.avail + 2)).unwrap();
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (descriptor id, length) of used element `n`.
    pub fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let e = self.used + 4 + (n % self.size) as u64 * 8;
        (mem.read_obj(GuestAddress(e)).unwrap(), mem.read_obj(GuestAddress(e + 4)).unwrap())
    }
}

/// Waits for an eventfd to be written (the queue's interrupt).
pub fn wait_eventfd(e: &vmm_sys_util::eventfd::EventFd, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd { fd: e.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is a valid pollfd array of length 1.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    if n == 1 {
        let _ = e.read();
        true
    } else {
        false
    }
}
