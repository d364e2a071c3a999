//! The vhost-user device: three queues (rx, tx, event), the guest CID as
//! configuration space, the muxer's epoll on the worker's epoll.

use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

use super::muxer::{Muxer, MuxerConfig, MuxerError};

/// virtio device ID of vsock (virtio 1.2, 5).
pub const VIRTIO_ID_VSOCK: u32 = 19;
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
pub const EVENT_QUEUE: u16 = 2;
pub const NUM_QUEUES: usize = 3;
pub const QUEUE_SIZE: usize = 256;
/// `handle_event` id of the muxer's epoll (ids up to NUM_QUEUES are the
/// library's).
pub const MUXER_EVENT: u16 = NUM_QUEUES as u16 + 1;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Muxer(#[from] MuxerError),
    #[error("cannot create the exit event: {0}")]
    ExitEvent(std::io::Error),
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("cannot watch the muxer's epoll: {0}")]
    Register(std::io::Error),
}

/// The vsock device behind one vhost-user socket.
pub struct VsockBackend {
    muxer: Muxer,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: bool,
    exit: (EventConsumer, EventNotifier),
}

impl VsockBackend {
    pub fn new(cfg: MuxerConfig) -> Result<Self, BackendError> {
        let muxer = Muxer::new(cfg)?;
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)
            .map_err(BackendError::ExitEvent)?;
        Ok(VsockBackend { muxer, mem: None, event_idx: false, exit })
    }

    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Config space (virtio 1.2, 5.10.4): le64 guest_cid.
    pub fn config_space(&self) -> [u8; 8] {
        self.muxer.guest_cid().to_le_bytes()
    }

    fn ready(vring: &VringRwLock) -> bool {
        let st = vring.get_ref();
        st.is_enabled() && st.get_queue().ready()
    }

    /// Runs the device: TX, host events, RX, until no work is left that the
    /// queues can take. Returns an error only for a broken vring (ring
    /// memory gone), never for anything the guest or a host socket did.
    fn run(&mut self, vrings: &[VringRwLock]) -> std::io::Result<()> {
        // No memory table yet (the driver is not up): host events are still
        // drained, or the worker's level-triggered epoll would spin.
        let mem = self.mem.as_ref().map(|m| m.memory());
        let (rx, tx) = (&vrings[RX_QUEUE as usize], &vrings[TX_QUEUE as usize]);
        if let Some(mem) = mem.as_deref().filter(|_| Self::ready(tx)) {
            loop {
                if self.event_idx {
                    tx.disable_notification().map_err(queue_err)?;
                }
                let used = self.muxer.process_tx(mem, tx.get_mut().get_queue_mut());
                if used && tx.needs_notification().map_err(queue_err)? {
                    tx.signal_used_queue()?;
                }
                // With EVENT_IDX, chains that came while notifications were
                // off are taken now.
                if !self.event_idx || !tx.enable_notification().map_err(queue_err)? {
                    break;
                }
            }
        }
        self.muxer.process_host_events();
        if let Some(mem) = mem.as_deref().filter(|_| Self::ready(rx)) {
            loop {
                if self.event_idx {
                    rx.disable_notification().map_err(queue_err)?;
                }
                let used = self.muxer.process_rx(mem, rx.get_mut().get_queue_mut());
                if used && rx.needs_notification().map_err(queue_err)? {
                    rx.signal_used_queue()?;
                }
                if !self.event_idx || !self.muxer.has_rx_work() || !rx.enable_notification().map_err(queue_err)? {
                    break;
                }
            }
            if self.event_idx {
                // Idle or out of buffers: be kicked when the guest adds some.
                rx.enable_notification().map_err(queue_err)?;
            }
        }
        Ok(())
    }
}

fn queue_err(e: virtio_queue::Error) -> std::io::Error {
    std::io::Error::other(format!("virtqueue: {e}"))
}

impl VhostUserBackendMut for VsockBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.config_space();
        let start = (offset as usize).min(cfg.len());
        let end = start.saturating_add(size as usize).min(cfg.len());
        let mut out = cfg[start..end].to_vec();
        // Reads past the 8 bytes see zeroes.
        out.resize(size.min(256) as usize, 0);
        out
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn reset_device(&mut self) {
        tracing::info!("vsock: device reset, closing all connections");
        self.muxer.reset();
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> std::io::Result<()> {
        match device_event {
            RX_QUEUE | TX_QUEUE | MUXER_EVENT => {}
            EVENT_QUEUE => return Ok(()),
            other => {
                tracing::warn!("vsock: unexpected event {other}");
                return Ok(());
            }
        }
        if let Err(e) = self.run(vrings) {
            // Ending the worker would stop the device for good; a broken
            // ring is logged and the next kick tries again.
            tracing::error!("vsock: {e}");
        }
        Ok(())
    }
}

/// How [`serve`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ServeEnd {
    /// The frontend closed the vhost-user connection.
    Disconnected,
    /// [`ShutdownTrigger::shutdown`] was called (e.g. on a signal).
    Shutdown,
}

/// Ends a running [`serve`] from another thread.
#[derive(Clone, Default)]
pub struct ShutdownTrigger {
    inner: Arc<std::sync::Mutex<(bool, Option<vhost_user_backend::ShutdownHandle>)>>,
}

impl ShutdownTrigger {
    pub fn shutdown(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        if let Some(h) = g.1.as_ref() {
            h.shutdown();
        }
    }
}

/// Listens on `socket`, serves one frontend connection with a vsock device
/// configured by `cfg`, and returns when that frontend disconnects or
/// `trigger` fires. The hybrid socket is removed on return.
pub fn serve(socket: &Path, cfg: MuxerConfig, trigger: &ShutdownTrigger) -> Result<ServeEnd, BackendError> {
    let backend = Arc::new(RwLock::new(VsockBackend::new(cfg)?));
    let epoll_fd = backend.read().unwrap_or_else(|p| p.into_inner()).muxer().epoll_fd();
    let mut daemon =
        VhostUserDaemon::new("rayos-vsock".into(), backend.clone(), GuestMemoryAtomic::new(GuestMemoryMmap::new()))
            .map_err(|e| BackendError::Daemon(e.to_string()))?;
    for h in daemon.get_epoll_handlers() {
        h.register_listener(epoll_fd, EventSet::IN, MUXER_EVENT as u64).map_err(BackendError::Register)?;
    }
    let mut listener = vhost::vhost_user::Listener::new(socket, true)
        .map_err(|e| BackendError::Daemon(format!("cannot listen on {}: {e}", socket.display())))?;
    // The frontend gets guest RAM through this socket: this user's only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BackendError::Daemon(format!("cannot restrict {}: {e}", socket.display())))?;
    }
    tracing::info!("vsock: waiting for a vhost-user frontend on {}", socket.display());
    daemon.start(&mut listener).map_err(|e| BackendError::Daemon(e.to_string()))?;
    {
        let mut g = trigger.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = daemon.shutdown_handle();
        if g.0 {
            daemon.request_shutdown();
        }
    }
    tracing::info!("vsock: frontend connected");
    let result = daemon.wait();
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
    let shut = trigger.inner.lock().unwrap_or_else(|p| p.into_inner()).0;
    match result {
        Ok(()) if shut => Ok(ServeEnd::Shutdown),
        Ok(()) => Ok(ServeEnd::Disconnected),
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(if shut { ServeEnd::Shutdown } else { ServeEnd::Disconnected }),
        Err(_) if shut => Ok(ServeEnd::Shutdown),
        Err(e) => Err(BackendError::Daemon(e.to_string())),
    }
}
