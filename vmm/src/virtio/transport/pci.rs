//! The virtio-pci function (virtio 1.2, 4.1): capabilities, BAR layout,
//! notifications and interrupts.
//!
//! BAR 0 (64-bit memory BAR, 32 KiB):
//! ```text
//! 0x0000 common configuration (4.1.4.3)   0x1000 ISR status (4.1.4.5)
//! 0x2000 device configuration (4.1.4.6)   0x3000 notifications (4.1.4.4),
//! 0x4000 MSI-X table                        queue N at 0x3000 + 4 * N
//! 0x5000 MSI-X pending-bit array
//! ```
//! Queue notifications are ioeventfds on their addresses, so a guest kick
//! never exits to the VMM; interrupts are irqfds on the GSI of the MSI-X
//! vector each queue uses.
//!
//! Masking: while a vector may not deliver (masked, function-masked, MSI-X
//! off), the irqfds of the queues using it are unregistered, so a device
//! raising an interrupt meanwhile leaves it counted in the eventfd: that is
//! the vector's pending bit (the PBA reads it without consuming it). On
//! unmask the route is set first and the irqfds registered again; KVM then
//! finds the eventfd signalled and injects the interrupt, so nothing raised
//! while masked is lost (Linux masks vectors while it moves their affinity). Queues are validated at DRIVER_OK against guest
//! memory (virtio-queue's checks plus alignment); a bad queue puts the device
//! in DEVICE_NEEDS_RESET (2.1.1) and raises a configuration interrupt.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, NoDatamatch};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::common_config::{CommonConfig, CommonEvent, COMMON_CONFIG_SIZE};
use super::msix::{MsixState, ENTRY_SIZE};
use crate::interrupt::{InterruptError, MsiRouter};
use crate::memory::GuestMem;
use crate::pci::{BarMove, PciConfig, PciDevice, PciIds};
use crate::virtio::{status, Activation, VirtioDevice, NO_VECTOR};

pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const DEVICE_SIZE: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;

const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
const ISR_CONFIG: u8 = 2;

/// Errors creating the function.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("PCI configuration: {0}")]
    Config(#[from] crate::pci::ConfigError),
    #[error(transparent)]
    Interrupt(#[from] InterruptError),
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("KVM ioeventfd/irqfd: {0}")]
    Kvm(kvm_ioctls::Error),
    #[error("device has {0} queues; at most 1024 are supported")]
    TooManyQueues(usize),
    /// A queue the driver enabled has rings that are not aligned (2.7).
    #[error("misaligned rings (descriptors {desc:#x}, driver {driver:#x}, device {device:#x})")]
    MisalignedRings { desc: u64, driver: u64, device: u64 },
    /// A queue size that is zero, above the maximum or not a power of two.
    #[error("bad queue size {size} (maximum {max})")]
    BadQueueSize { size: u16, max: u16 },
    /// A queue's rings are not inside guest RAM.
    #[error("rings outside guest memory (descriptors {desc:#x}, driver {driver:#x}, device {device:#x}, size {size})")]
    RingsOutsideRam { desc: u64, driver: u64, device: u64, size: u16 },
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut c = vec![CAP_VENDOR, 0, (16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    c.extend_from_slice(extra);
    c
}

/// The virtio-queue `Queue` for a queue's state as the driver set it (size
/// and ring addresses), ready; the size must be one the queue can take.
pub fn queue_from_state(q: &super::common_config::QueueState) -> Result<Queue, TransportError> {
    let bad_size = || TransportError::BadQueueSize { size: q.size, max: q.max_size };
    let mut vq = Queue::new(q.max_size).map_err(|_| bad_size())?;
    vq.set_size(q.size);
    if vq.size() != q.size {
        return Err(bad_size());
    }
    vq.set_desc_table_address(Some(q.desc as u32), Some((q.desc >> 32) as u32));
    vq.set_avail_ring_address(Some(q.driver as u32), Some((q.driver >> 32) as u32));
    vq.set_used_ring_address(Some(q.device as u32), Some((q.device >> 32) as u32));
    vq.set_ready(true);
    Ok(vq)
}

/// Checks a queue the driver enabled against guest memory.
pub fn validate_queue(mem: &GuestMem, q: &super::common_config::QueueState) -> Result<(), TransportError> {
    let (desc, driver, device, size) = (q.desc, q.driver, q.device, q.size);
    if desc % 16 != 0 || driver % 2 != 0 || device % 4 != 0 {
        return Err(TransportError::MisalignedRings { desc, driver, device });
    }
    let vq = queue_from_state(q)?;
    if vq.is_valid(mem) {
        Ok(())
    } else {
        Err(TransportError::RingsOutsideRam { desc, driver, device, size })
    }
}

/// Whether an eventfd has a count waiting, without consuming it.
fn signalled(efd: &EventFd) -> bool {
    let mut p = libc::pollfd { fd: efd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call, timeout 0; the
    // fd is owned by `efd`, which outlives the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// A virtio device on PCI. See the module documentation.
pub struct VirtioPciDevice {
    name: String,
    config: PciConfig,
    common: CommonConfig,
    msix: MsixState,
    msix_cap: usize,
    pci_cfg_cap: usize,
    isr: u8,
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    router: Arc<MsiRouter>,
    bar_addr: u64,
    vector_gsi: Vec<u32>,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    config_irq: EventFd,
    /// Vector each queue's call eventfd (and then the config eventfd, last) uses.
    slot_vector: Vec<u16>,
    /// GSI whose irqfd each slot's eventfd is registered as (only while its
    /// vector may deliver).
    bound: Vec<Option<u32>>,
    active: bool,
}

impl VirtioPciDevice {
    /// Creates the function with its BAR at `bar_addr` (32 KiB aligned).
    pub fn new(
        name: &str,
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        router: Arc<MsiRouter>,
        bar_addr: u64,
    ) -> Result<Self, TransportError> {
        let max_sizes = device.queue_max_sizes();
        if max_sizes.len() > 1024 {
            return Err(TransportError::TooManyQueues(max_sizes.len()));
        }
        let vectors = max_sizes.len() as u16 + 1;
        let device_type = device.device_type();
        let mut config = PciConfig::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: 0x1040 + device_type as u16,
            class: 0xff,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40,
        });
        config.add_bar(0, bar_addr, BAR_SIZE, true)?;
        let ro = |n: usize| vec![0u8; n];
        config.add_capability(&vendor_cap(CFG_COMMON, COMMON_OFFSET, COMMON_CONFIG_SIZE, &[]), &ro(16))?;
        let notify_len = max_sizes.len() as u64 * NOTIFY_MULTIPLIER as u64;
        config.add_capability(
            &vendor_cap(CFG_NOTIFY, NOTIFY_OFFSET, notify_len.max(4), &NOTIFY_MULTIPLIER.to_le_bytes()),
            &ro(20),
        )?;
        config.add_capability(&vendor_cap(CFG_ISR, ISR_OFFSET, 1, &[]), &ro(16))?;
        config.add_capability(&vendor_cap(CFG_DEVICE, DEVICE_OFFSET, DEVICE_SIZE, &[]), &ro(16))?;
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and data are the driver's.
        let mut pci_cfg_mask = ro(20);
        pci_cfg_mask[4] = 0xff;
        pci_cfg_mask[8..20].fill(0xff);
        let pci_cfg_cap = config.add_capability(&vendor_cap(CFG_PCI, 0, 0, &[0; 4]), &pci_cfg_mask)?;
        let msix = MsixState::new(vectors);
        let mut msix_body = vec![CAP_MSIX, 0];
        msix_body.extend_from_slice(&msix.table_size_field().to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let msix_cap = config.add_capability(&msix_body, &[0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0])?;

        let vector_gsi = (0..vectors).map(|_| router.allocate()).collect::<Result<Vec<_>, _>>()?;
        let efd = || EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd);
        let kicks = max_sizes.iter().map(|_| efd()).collect::<Result<Vec<_>, _>>()?;
        let calls = max_sizes.iter().map(|_| efd()).collect::<Result<Vec<_>, _>>()?;
        let features = device.features();
        let config_irq = efd()?;
        let mut device = device;
        device.set_broken_notifier(config_irq.try_clone().map_err(TransportError::EventFd)?);
        let dev = VirtioPciDevice {
            name: name.to_string(),
            config,
            common: CommonConfig::new(features, &max_sizes, vectors),
            msix,
            msix_cap,
            pci_cfg_cap,
            isr: 0,
            device,
            mem,
            slot_vector: vec![NO_VECTOR; max_sizes.len() + 1],
            bound: vec![None; max_sizes.len() + 1],
            router,
            bar_addr,
            vector_gsi,
            kicks,
            calls,
            config_irq,
            active: false,
        };
        dev.register_ioeventfds(bar_addr, true)?;
        Ok(dev)
    }

    fn register_ioeventfds(&self, bar: u64, add: bool) -> Result<(), TransportError> {
        for (i, k) in self.kicks.iter().enumerate() {
            let addr = IoEventAddress::Mmio(bar + NOTIFY_OFFSET + i as u64 * NOTIFY_MULTIPLIER as u64);
            let vm = self.router.vm();
            let r = if add {
                vm.register_ioevent(k, &addr, NoDatamatch)
            } else {
                vm.unregister_ioevent(k, &addr, NoDatamatch)
            };
            r.map_err(TransportError::Kvm)?;
        }
        Ok(())
    }

    fn slot_efd(&self, slot: usize) -> &EventFd {
        if slot < self.calls.len() {
            &self.calls[slot]
        } else {
            &self.config_irq
        }
    }

    /// Points eventfd `slot` (a queue, or the config interrupt when
    /// `slot == queues`) at `vector`.
    fn bind(&mut self, slot: usize, vector: u16) {
        self.slot_vector[slot] = vector;
        self.sync_slot(slot);
    }

    /// Registers the slot's irqfd on its vector's GSI while the vector may
    /// deliver, and unregisters it otherwise (see the module notes).
    fn sync_slot(&mut self, slot: usize) {
        let vector = self.slot_vector[slot];
        let want = match vector {
            NO_VECTOR => None,
            v if self.msix.route(v).is_some() => self.vector_gsi.get(v as usize).copied(),
            _ => None,
        };
        if self.bound[slot] == want {
            return;
        }
        let vm = self.router.vm();
        let efd = self.slot_efd(slot);
        if let Some(old) = self.bound[slot] {
            if let Err(e) = vm.unregister_irqfd(efd, old) {
                tracing::warn!("{}: unregister irqfd: {e}", self.name);
            }
        }
        let mut now = None;
        if let Some(gsi) = want {
            match vm.register_irqfd(efd, gsi) {
                Ok(()) => now = Some(gsi),
                Err(e) => tracing::warn!("{}: register irqfd on GSI {gsi}: {e}", self.name),
            }
        }
        self.bound[slot] = now;
    }

    /// Follows a change of whether and where `vector` delivers: a route
    /// given is set before the irqfds return (which injects what is
    /// pending); a route withdrawn is withdrawn after they are gone.
    fn update_route(&mut self, vector: u16) {
        let Some(&gsi) = self.vector_gsi.get(vector as usize) else { return };
        let route = self.msix.route(vector);
        let slots: Vec<usize> = (0..self.slot_vector.len()).filter(|&s| self.slot_vector[s] == vector).collect();
        if route.is_none() {
            for &s in &slots {
                self.sync_slot(s);
            }
        }
        if let Err(e) = self.router.set_route(gsi, route) {
            tracing::warn!("{}: MSI-X vector {vector}: {e}", self.name);
        }
        if route.is_some() {
            for &s in &slots {
                self.sync_slot(s);
            }
        }
    }

    fn update_all_routes(&mut self) {
        for v in 0..self.msix.len() {
            self.update_route(v);
        }
    }

    /// Whether `vector` has an interrupt waiting: it may not deliver and
    /// one of its eventfds is signalled (polled, not read).
    fn vector_pending(&self, vector: u16) -> bool {
        self.msix.route(vector).is_none()
            && (0..self.slot_vector.len())
                .filter(|&s| self.slot_vector[s] == vector)
                .any(|s| signalled(self.slot_efd(s)))
    }

    /// One line on where the device and its driver stand, for a state
    /// report (`rayos-vmm` on SIGUSR1): the status, and per queue its size,
    /// the driver's and the device's ring indexes (read from guest memory:
    /// `avail - used` requests are outstanding), its vector, whether that
    /// vector may deliver and whether an interrupt is waiting in its eventfd.
    pub fn report(&self) -> String {
        use vm_memory::{Bytes, GuestAddress};
        let idx = |ring: u64| -> String {
            ring.checked_add(2)
                .and_then(|a| self.mem.read_obj::<u16>(GuestAddress(a)).ok())
                .map_or_else(|| "?".to_string(), |v| v.to_string())
        };
        let mut out = format!(
            "{}: status={:#04x} active={} isr={:#x} msix_config_vector={}",
            self.name, self.common.status, self.active, self.isr, self.common.msix_config
        );
        for (i, q) in self.common.queues.iter().enumerate() {
            if !q.ready {
                continue;
            }
            let v = q.msix_vector;
            out.push_str(&format!(
                "; q{i} size={} avail={} used={} vector={}{}{}",
                q.size,
                idx(q.driver),
                idx(q.device),
                if v == NO_VECTOR { "none".to_string() } else { v.to_string() },
                if v != NO_VECTOR && self.msix.route(v).is_none() { " (may not deliver)" } else { "" },
                if signalled(&self.calls[i]) { " call-signalled" } else { "" },
            ));
        }
        out
    }

    /// Puts the device in DEVICE_NEEDS_RESET and tells the driver (2.1.2).
    fn needs_reset(&mut self, why: &str) {
        tracing::error!("{}: {why}; device needs reset", self.name);
        self.common.status |= status::DEVICE_NEEDS_RESET;
        self.config_changed();
    }

    /// Raises a configuration-change interrupt.
    pub fn config_changed(&mut self) {
        self.common.config_generation = self.common.config_generation.wrapping_add(1);
        self.isr |= ISR_CONFIG;
        let _ = self.config_irq.write(1);
    }

    fn reset_device(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.isr = 0;
        for slot in 0..self.bound.len() {
            self.bind(slot, NO_VECTOR);
            // Nothing raised before the reset stays pending after it.
            let _ = self.slot_efd(slot).read();
        }
    }

    fn activate(&mut self) {
        if self.device.broken() {
            return self.needs_reset("backend is gone");
        }
        let mut queues = Vec::new();
        for (i, q) in self.common.queues.iter().enumerate() {
            if !q.ready {
                continue;
            }
            if let Err(e) = validate_queue(&self.mem, q) {
                return self.needs_reset(&format!("queue {i}: {e}"));
            }
            queues.push((i, *q));
        }
        let activation = Activation {
            features: self.common.driver_features(),
            mem: &self.mem,
            queues,
            kicks: &self.kicks,
            calls: &self.calls,
        };
        match self.device.activate(activation) {
            Ok(()) => {
                self.active = true;
                tracing::info!("{}: activated", self.name);
            }
            Err(e) => self.needs_reset(&format!("activation failed: {e}")),
        }
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        match self.common.write(offset, data) {
            Some(CommonEvent::Reset) => self.reset_device(),
            Some(CommonEvent::DriverOk) => self.activate(),
            Some(CommonEvent::VectorMapped { queue, vector }) => {
                let slot = queue.map_or(self.calls.len(), |q| q as usize);
                self.bind(slot, vector);
            }
            Some(CommonEvent::Failed) => tracing::warn!("{}: driver gave up (FAILED)", self.name),
            Some(CommonEvent::FeaturesAccepted(f)) => tracing::debug!("{}: features {f:#x}", self.name),
            Some(CommonEvent::QueueEnabled(_)) | None => {}
        }
    }

    /// Shows a broken backend to the driver (the interrupt was already raised).
    fn check_broken(&mut self) {
        if self.device.broken() && self.common.status != 0 && self.common.status & status::DEVICE_NEEDS_RESET == 0 {
            tracing::error!("{}: backend gone; device needs reset", self.name);
            self.common.status |= status::DEVICE_NEEDS_RESET;
            self.common.config_generation = self.common.config_generation.wrapping_add(1);
            self.isr |= ISR_CONFIG;
        }
    }

    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        self.check_broken();
        match offset {
            o if o < COMMON_CONFIG_SIZE => self.common.read(o, data),
            o if (ISR_OFFSET..ISR_OFFSET + 4).contains(&o) => {
                data.fill(0);
                if o == ISR_OFFSET && !data.is_empty() {
                    data[0] = self.isr;
                    self.isr = 0; // reading ISR clears it (4.1.4.5)
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.read_config(o - DEVICE_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + self.msix.len() as u64 * ENTRY_SIZE).contains(&o) => {
                self.msix.read_table(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + 0x1000).contains(&o) => {
                let pending: Vec<bool> = (0..self.msix.len()).map(|v| self.vector_pending(v)).collect();
                self.msix.read_pba(o - MSIX_PBA_OFFSET, data, &pending)
            }
            _ => data.fill(0),
        }
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_CONFIG_SIZE => self.common_write(o, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + 0x1000).contains(&o) => {
                // Only reached when KVM did not take the write as an ioeventfd.
                let q = ((o - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER as u64) as usize;
                match self.kicks.get(q) {
                    Some(k) => {
                        let _ = k.write(1);
                    }
                    None => tracing::debug!("{}: notify for absent queue {q}", self.name),
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + self.msix.len() as u64 * ENTRY_SIZE).contains(&o) => {
                if let Some(v) = self.msix.write_table(o - MSIX_TABLE_OFFSET, data) {
                    self.update_route(v);
                }
            }
            _ => tracing::debug!("{}: write to read-only or unused BAR offset {offset:#x}", self.name),
        }
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window: (bar, offset, length) as the driver set them.
    fn pci_cfg_window(&self) -> (u8, u64, usize) {
        let c = self.pci_cfg_cap;
        let bar = (self.config.read_u32(c + 4) & 0xff) as u8;
        (bar, self.config.read_u32(c + 8) as u64, self.config.read_u32(c + 12) as usize)
    }
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        let data_off = self.pci_cfg_cap + 16;
        if offset >= data_off && offset < data_off + 4 {
            let (bar, off, len) = self.pci_cfg_window();
            if bar == 0 && matches!(len, 1 | 2 | 4) && len == data.len() && offset == data_off {
                return self.bar0_read(off, data);
            }
        }
        self.config.read(offset, data)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
        let data_off = self.pci_cfg_cap + 16;
        if offset >= data_off && offset < data_off + 4 {
            let (bar, off, len) = self.pci_cfg_window();
            if bar == 0 && matches!(len, 1 | 2 | 4) && len == data.len() && offset == data_off {
                self.bar0_write(off, data);
            }
            return None;
        }
        let mv = self.config.write(offset, data);
        let ctl = self.msix_cap + 2;
        if offset < ctl + 2 && offset + data.len() > ctl {
            self.msix.set_control(self.config.read_u16(ctl));
            self.update_all_routes();
        }
        mv
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == 0 {
            self.bar0_read(offset, data)
        } else {
            data.fill(0xff)
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == 0 {
            self.bar0_write(offset, data)
        }
    }

    fn bar_moved(&mut self, mv: BarMove) {
        if mv.index != 0 {
            return;
        }
        if let Err(e) =
            self.register_ioeventfds(self.bar_addr, false).and_then(|_| self.register_ioeventfds(mv.new, true))
        {
            tracing::warn!("{}: moving notification ioeventfds: {e}", self.name);
        }
        self.bar_addr = mv.new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::transport::common_config::QueueState;

    fn mem() -> GuestMem {
        crate::memory::GuestRam::new(32 << 20).unwrap().memory
    }

    fn q(desc: u64, driver: u64, device: u64, size: u16) -> QueueState {
        QueueState { max_size: 256, size, ready: true, desc, driver, device, msix_vector: 0 }
    }

    #[test]
    fn queues_inside_memory_and_aligned_are_valid() {
        assert!(validate_queue(&mem(), &q(0x10000, 0x11000, 0x12000, 256)).is_ok());
    }

    #[test]
    fn absurd_queues_are_refused() {
        let m = mem();
        assert!(validate_queue(&m, &q(0x10008, 0x11000, 0x12000, 256)).unwrap_err().to_string().contains("misaligned"));
        assert!(validate_queue(&m, &q(0x10000, 0x11001, 0x12000, 256)).unwrap_err().to_string().contains("misaligned"));
        assert!(validate_queue(&m, &q(0xffff_ffff_ffff_0000, 0x11000, 0x12000, 256))
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(validate_queue(&m, &q(0x10000, 0x11000, (32 << 20) - 8, 256))
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(validate_queue(&m, &q(0x10000, 0x11000, 0x12000, 300)).is_err());
    }

    #[test]
    fn capability_bodies() {
        let c = vendor_cap(CFG_NOTIFY, NOTIFY_OFFSET, 8, &NOTIFY_MULTIPLIER.to_le_bytes());
        assert_eq!(c.len(), 20);
        assert_eq!((c[0], c[2], c[3], c[4]), (CAP_VENDOR, 20, CFG_NOTIFY, 0));
        assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), NOTIFY_OFFSET as u32);
        assert_eq!(u32::from_le_bytes(c[16..20].try_into().unwrap()), NOTIFY_MULTIPLIER);
    }
}
