//! vhost-user frontend device on the `vhost` crate.
//!
//! At creation it connects, takes ownership (SET_OWNER), reads the backend's
//! virtio and protocol features and negotiates MQ, REPLY_ACK and CONFIG. When
//! the driver sets DRIVER_OK it sends the acked features, the memory table
//! (the memfd regions of guest RAM, so the backend maps the same pages), and
//! for every enabled queue its size, ring addresses (in this process's
//! address space, as the protocol wants), base index, call and kick
//! eventfds, then enables it. The kick eventfds are KVM ioeventfds and the
//! call eventfds KVM irqfds: the data path never passes through the VMM.
//!
//! Device configuration comes from the VMM (a fixed byte image, e.g. the
//! virtio-fs tag) or, when none is given and the backend offers CONFIG, from
//! the backend through GET_CONFIG/SET_CONFIG.
//!
//! A monitor thread watches the socket. When the backend dies the VMM keeps
//! running: the device is marked broken, its transport shows
//! DEVICE_NEEDS_RESET with a configuration interrupt, and later activations
//! fail. RayOS does not reconnect to a restarted backend; the VM must be
//! restarted to get the device back.
//!
//! A backend that hangs (stopped, deadlocked) must not hang the vCPU that
//! asked: every request runs under a watchdog that shuts the socket down
//! when it takes longer than [`REQUEST_TIMEOUT`] (the `vhost` crate retries
//! a timed-out read by itself, so a socket timeout would not end the wait);
//! the blocked call then fails, and a request that fails marks the device
//! broken the same way a dead backend does, since the protocol's state is
//! then unknown.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::sync::Mutex;
use std::time::Duration;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestRam;
use crate::virtio::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1};

/// Errors talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("cannot connect to vhost-user backend at {path}: {source}")]
    Connect { path: String, source: vhost::Error },
    #[error("vhost-user backend {path}: {what}: {source}")]
    Request { path: String, what: &'static str, source: vhost::Error },
    #[error("vhost-user backend {path} does not offer VIRTIO_F_VERSION_1")]
    NotModern { path: String },
    #[error("vhost-user backend {path} supports {have} queues, {want} requested")]
    Queues { path: String, have: u64, want: usize },
}

/// Memory regions as the backend must map them.
#[derive(Debug, Clone, Copy)]
struct Region {
    gpa: u64,
    size: u64,
    hva: u64,
    offset: u64,
}

/// See the module documentation.
pub struct VhostUserDevice {
    name: String,
    socket: PathBuf,
    device_type: u32,
    frontend: Frontend,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    queue_sizes: Vec<u16>,
    config: Option<Vec<u8>>,
    regions: Vec<Region>,
    memfd: RawFd,
    broken: Arc<AtomicBool>,
    notifier: Arc<Mutex<Option<EventFd>>>,
    watchdog: Watchdog,
    active_queues: Vec<usize>,
}

const OUR_PROTOCOL: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK).union(VhostUserProtocolFeatures::CONFIG);

impl VhostUserDevice {
    /// Connects to the backend at `socket` for a device of `device_type`
    /// with `queue_sizes`. `config` is the device configuration the VMM
    /// presents; None asks the backend for it.
    pub fn connect(
        name: &str,
        socket: &Path,
        device_type: u32,
        queue_sizes: Vec<u16>,
        config: Option<Vec<u8>>,
        ram: &GuestRam,
    ) -> Result<Self, VhostUserError> {
        let path = socket.display().to_string();
        let req = |what| {
            let path = path.clone();
            move |source| VhostUserError::Request { path, what, source }
        };
        let mut frontend = Frontend::connect(socket, queue_sizes.len() as u64)
            .map_err(|source| VhostUserError::Connect { path: path.clone(), source })?;
        let watchdog = Watchdog::start(name, frontend.as_raw_fd(), REQUEST_TIMEOUT);
        let guard = watchdog.guard();
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let features = frontend.get_features().map_err(req("GET_FEATURES"))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(VhostUserError::NotModern { path });
        }
        let mut protocol = VhostUserProtocolFeatures::empty();
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend.get_protocol_features().map_err(req("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & OUR_PROTOCOL;
            frontend.set_protocol_features(protocol).map_err(req("SET_PROTOCOL_FEATURES"))?;
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                let have = frontend.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
                if have < queue_sizes.len() as u64 {
                    return Err(VhostUserError::Queues { path, have, want: queue_sizes.len() });
                }
            }
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
            }
        }

        drop(guard);
        let mut regions = Vec::new();
        let mut offset = 0;
        for r in ram.memory.iter() {
            let hva = ram.memory.get_host_address(r.start_addr()).expect("region start is mapped") as u64;
            regions.push(Region { gpa: r.start_addr().0, size: r.len(), hva, offset });
            offset += r.len();
        }

        let broken = Arc::new(AtomicBool::new(false));
        let notifier = Arc::new(Mutex::new(None));
        spawn_monitor(name, &path, frontend.as_raw_fd(), broken.clone(), notifier.clone());
        tracing::info!("{name}: vhost-user backend {path}: features {features:#x}, protocol {:#x}", protocol.bits());
        Ok(VhostUserDevice {
            name: name.to_string(),
            socket: socket.to_path_buf(),
            device_type,
            frontend,
            features,
            protocol,
            queue_sizes,
            config,
            regions,
            memfd: ram.fd(),
            broken,
            notifier,
            watchdog,
            active_queues: Vec::new(),
        })
    }

    fn mem_table(&self) -> Vec<VhostUserMemoryRegionInfo> {
        self.regions
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.gpa,
                memory_size: r.size,
                userspace_addr: r.hva,
                mmap_offset: r.offset,
                mmap_handle: self.memfd,
            })
            .collect()
    }

    fn hva(&self, gpa: u64) -> Option<u64> {
        self.regions.iter().find(|r| gpa >= r.gpa && gpa < r.gpa + r.size).map(|r| r.hva + (gpa - r.gpa))
    }

    fn try_activate(&mut self, a: &Activation<'_>) -> Result<(), ActivateError> {
        let e = |request: &'static str| move |source: vhost::Error| ActivateError::Backend { request, source };
        let proto_bit = self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend.set_features(a.features | proto_bit).map_err(e("SET_FEATURES"))?;
        self.frontend.set_mem_table(&self.mem_table()).map_err(e("SET_MEM_TABLE"))?;
        for (i, q) in &a.queues {
            let i = *i;
            let addr = |gpa: u64| self.hva(gpa).ok_or(ActivateError::RingOutsideRam { queue: i, gpa });
            let cfg = VringConfigData {
                queue_max_size: q.max_size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: addr(q.desc)?,
                used_ring_addr: addr(q.device)?,
                avail_ring_addr: addr(q.driver)?,
                log_addr: None,
            };
            self.frontend.set_vring_num(i, q.size).map_err(e("SET_VRING_NUM"))?;
            self.frontend.set_vring_addr(i, &cfg).map_err(e("SET_VRING_ADDR"))?;
            self.frontend.set_vring_base(i, 0).map_err(e("SET_VRING_BASE"))?;
            self.frontend.set_vring_call(i, &a.calls[i]).map_err(e("SET_VRING_CALL"))?;
            self.frontend.set_vring_kick(i, &a.kicks[i]).map_err(e("SET_VRING_KICK"))?;
            if proto_bit != 0 {
                self.frontend.set_vring_enable(i, true).map_err(e("SET_VRING_ENABLE"))?;
            }
            self.active_queues.push(i);
        }
        Ok(())
    }
}

/// Longest the VMM waits for the backend to take or answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Shuts the backend's socket down when one request takes longer than its
/// timeout (see the module notes). One thread per device, idle while no
/// request runs.
pub struct Watchdog {
    state: Arc<(Mutex<WatchState>, std::sync::Condvar)>,
}

#[derive(Default)]
pub struct WatchState {
    /// When the running request must be done by.
    deadline: Option<std::time::Instant>,
    fired: bool,
    stop: bool,
}

/// A request in progress; dropping it disarms the watchdog.
pub struct WatchGuard(Arc<(Mutex<WatchState>, std::sync::Condvar)>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let (m, cv) = &*self.0;
        m.lock().expect("watchdog lock").deadline = None;
        cv.notify_all();
    }
}

impl Watchdog {
    /// Watches `fd` (duplicated; the copy is the thread's).
    pub fn start(name: &str, fd: RawFd, timeout: Duration) -> Self {
        let state = Arc::new((Mutex::new(WatchState::default()), std::sync::Condvar::new()));
        // SAFETY: dup of a descriptor the caller owns; the copy is owned by the thread.
        let fd = unsafe { libc::dup(fd) };
        if fd < 0 {
            tracing::warn!("{name}: no request watchdog: {}", std::io::Error::last_os_error());
            return Watchdog { state };
        }
        let (st, name) = (state.clone(), name.to_string());
        let spawned = std::thread::Builder::new().name(format!("{name}-watchdog")).spawn(move || {
            let (m, cv) = &*st;
            let mut g = m.lock().expect("watchdog lock");
            loop {
                if g.stop || g.fired {
                    break;
                }
                match g.deadline {
                    None => g = cv.wait(g).expect("watchdog lock"),
                    Some(d) => {
                        let now = std::time::Instant::now();
                        if now < d {
                            g = cv.wait_timeout(g, d - now).expect("watchdog lock").0;
                            continue;
                        }
                        g.fired = true;
                        tracing::error!(
                            "{name}: the vhost-user backend did not answer within {timeout:?}; closing its socket"
                        );
                        // SAFETY: shutting down the socket this thread holds a copy of.
                        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    }
                }
            }
            // SAFETY: closing the copy this thread owns.
            unsafe { libc::close(fd) };
        });
        if let Err(e) = spawned {
            tracing::warn!("no request watchdog: {e}");
            // SAFETY: the thread did not start; the copy is still ours to close.
            unsafe { libc::close(fd) };
        }
        Watchdog { state }
    }

    /// Arms the watchdog for one request.
    pub fn guard(&self) -> WatchGuard {
        let (m, cv) = &*self.state;
        m.lock().expect("watchdog lock").deadline = Some(std::time::Instant::now() + REQUEST_TIMEOUT);
        cv.notify_all();
        WatchGuard(self.state.clone())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (m, cv) = &*self.state;
        m.lock().expect("watchdog lock").stop = true;
        cv.notify_all();
    }
}

/// Marks the device broken after a request failed or timed out, and tells
/// the transport (once).
fn give_up(
    name: &str,
    path: &Path,
    request: &str,
    err: &dyn std::fmt::Display,
    broken: &AtomicBool,
    notifier: &Mutex<Option<EventFd>>,
) {
    if broken.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(irq) = notifier.lock().expect("notifier lock").as_ref() {
        let _ = irq.write(1);
    }
    tracing::error!(
        "{name}: vhost-user backend {} failed {request} or did not answer within {REQUEST_TIMEOUT:?} ({err}); the device needs a reset",
        path.display()
    );
}

fn spawn_monitor(name: &str, path: &str, fd: RawFd, broken: Arc<AtomicBool>, notifier: Arc<Mutex<Option<EventFd>>>) {
    // SAFETY: dup of a descriptor we own; the copy is owned by the thread.
    let fd = unsafe { libc::dup(fd) };
    if fd < 0 {
        tracing::warn!("{name}: cannot watch the vhost-user socket: {}", std::io::Error::last_os_error());
        return;
    }
    let (name, path) = (name.to_string(), path.to_string());
    let _ = std::thread::Builder::new().name(format!("{name}-watch")).spawn(move || {
        let mut pfd = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
        loop {
            // SAFETY: `pfd` is a valid pollfd array of length 1.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                break;
            }
        }
        broken.store(true, Ordering::Release);
        if let Some(irq) = notifier.lock().expect("notifier lock").as_ref() {
            let _ = irq.write(1);
        }
        tracing::error!("{name}: vhost-user backend {path} went away; the device needs a reset (no reconnection)");
        // SAFETY: closing the descriptor this thread owns.
        unsafe { libc::close(fd) };
    });
}

impl VirtioDevice for VhostUserDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        self.queue_sizes.clone()
    }

    fn features(&self) -> u64 {
        // PROTOCOL_FEATURES and LOG_ALL are vhost-user bits, not virtio ones.
        self.features & !(VhostUserVirtioFeatures::PROTOCOL_FEATURES | VhostUserVirtioFeatures::LOG_ALL).bits()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        match &self.config {
            Some(c) => {
                data.fill(0);
                let start = (offset as usize).min(c.len());
                let end = (offset as usize + data.len()).min(c.len());
                data[..end - start].copy_from_slice(&c[start..end]);
            }
            None if self.protocol.contains(VhostUserProtocolFeatures::CONFIG) && !self.broken() => {
                // GET_CONFIG needs &mut; the frontend's inner state is behind a mutex, so a clone is cheap.
                let mut f = self.frontend.clone();
                let _guard = self.watchdog.guard();
                match f.get_config(
                    offset as u32,
                    data.len() as u32,
                    VhostUserConfigFlags::WRITABLE,
                    &vec![0; data.len()],
                ) {
                    Ok((_, bytes)) => data.copy_from_slice(&bytes[..data.len()]),
                    Err(e) => {
                        give_up(&self.name, &self.socket, "GET_CONFIG", &e, &self.broken, &self.notifier);
                        data.fill(0);
                    }
                }
            }
            None => data.fill(0),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.config.is_none() && self.protocol.contains(VhostUserProtocolFeatures::CONFIG) && !self.broken() {
            let _guard = self.watchdog.guard();
            if let Err(e) = self.frontend.set_config(offset as u32, VhostUserConfigFlags::WRITABLE, data) {
                give_up(&self.name, &self.socket, "SET_CONFIG", &e, &self.broken, &self.notifier);
            }
        }
    }

    fn activate(&mut self, a: Activation<'_>) -> Result<(), ActivateError> {
        if self.broken() {
            return Err(ActivateError::BackendGone(self.socket.display().to_string()));
        }
        let r = {
            let _guard = self.watchdog.guard();
            self.try_activate(&a)
        };
        if let Err(e @ ActivateError::Backend { .. }) = &r {
            give_up(&self.name, &self.socket, "activation", e, &self.broken, &self.notifier);
        }
        r
    }

    fn reset(&mut self) {
        for i in std::mem::take(&mut self.active_queues) {
            if self.broken() {
                break;
            }
            // GET_VRING_BASE stops the ring in the backend.
            let r = {
                let _guard = self.watchdog.guard();
                self.frontend.get_vring_base(i)
            };
            if let Err(e) = r {
                give_up(
                    &self.name,
                    &self.socket,
                    &format!("GET_VRING_BASE of queue {i}"),
                    &e,
                    &self.broken,
                    &self.notifier,
                );
            }
        }
    }

    fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    fn set_broken_notifier(&mut self, irq: EventFd) {
        *self.notifier.lock().expect("notifier lock") = Some(irq);
    }
}
