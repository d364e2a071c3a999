//! The PCI root bus (segment 0, bus 0) and its configuration access methods.
//!
//! - Configuration mechanism #1: the address latch at 0xcf8 and the data
//!   window at 0xcfc..0xd00 (PCI Local Bus 3.0, 3.2.2.3.2).
//! - ECAM: 4 KiB of MMIO per function at `PCI_ECAM_START` (PCIe 5.0, 7.2.2),
//!   described to the guest by the MCFG table.
//!
//! Slot 0 is the host bridge. A device's memory BARs are ranges on the MMIO
//! bus; when the guest moves a BAR, its range moves with it.

use std::sync::{Arc, Mutex};

use vm_allocator::{AddressAllocator, AllocPolicy};

use super::config::{BarMove, PciConfig, PciIds};
use crate::devices::{Bus, BusDevice, BusError};

/// A PCI function on the root bus.
pub trait PciDevice: Send {
    /// The function's configuration space.
    fn config(&self) -> &PciConfig;
    /// A guest read of configuration space.
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data)
    }
    /// A guest write to configuration space; returns the BAR it moved.
    fn config_write(&mut self, offset: usize, data: &[u8]) -> Option<BarMove>;
    /// A guest read inside a BAR.
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    /// A guest write inside a BAR.
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    /// Called after a BAR moved (its MMIO range has already moved).
    fn bar_moved(&mut self, _mv: BarMove) {}
}

/// Errors building the bus.
#[derive(Debug, thiserror::Error)]
pub enum PciBusError {
    #[error("the PCI root bus is full (32 slots)")]
    Full,
    #[error("no room for a {0:#x}-byte BAR in the 32-bit PCI window: {1}")]
    NoBarSpace(u64, String),
    #[error("cannot map a BAR: {0}")]
    Bar(#[from] BusError),
}

/// The host bridge at 00:00.0.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    pub fn new() -> Self {
        HostBridge {
            config: PciConfig::new(PciIds {
                vendor: 0x1b36, // Red Hat, Inc.: generic virtual-hardware ids
                device: 0x0008, // PCIe host bridge
                class: 0x06,
                subclass: 0x00,
                prog_if: 0,
                revision: 0,
                subsystem_vendor: 0x1b36,
                subsystem: 0x0008,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
        self.config.write(offset, data)
    }
}

/// Routes BAR accesses on the MMIO bus to the device.
struct BarRegion {
    device: Arc<Mutex<dyn PciDevice>>,
    bar: usize,
}

impl BusDevice for BarRegion {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        self.device.lock().expect("PCI device lock").bar_read(self.bar, offset, data);
    }
    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        self.device.lock().expect("PCI device lock").bar_write(self.bar, offset, data);
    }
}

/// Hands out naturally aligned BAR addresses in the 32-bit PCI window.
pub struct BarAllocator(AddressAllocator);

impl BarAllocator {
    /// The window `[start, end)`.
    pub fn new(start: u64, end: u64) -> Self {
        BarAllocator(AddressAllocator::new(start, end - start).expect("valid PCI window"))
    }

    /// A free, `size`-aligned range of `size` bytes.
    pub fn allocate(&mut self, size: u64) -> Result<u64, PciBusError> {
        self.0
            .allocate(size, size, AllocPolicy::FirstMatch)
            .map(|r| r.start())
            .map_err(|e| PciBusError::NoBarSpace(size, e.to_string()))
    }
}

/// Bus 0 of segment 0.
pub struct PciRoot {
    slots: Vec<Arc<Mutex<dyn PciDevice>>>,
    mmio: Arc<Bus>,
}

impl PciRoot {
    /// A root bus holding only the host bridge; BARs go on `mmio`.
    pub fn new(mmio: Arc<Bus>) -> Self {
        PciRoot { slots: vec![Arc::new(Mutex::new(HostBridge::new()))], mmio }
    }

    /// Plugs a device into the next free slot and maps its BARs; returns the slot.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciBusError> {
        if self.slots.len() >= 32 {
            return Err(PciBusError::Full);
        }
        let bars: Vec<_> = {
            let d = device.lock().expect("PCI device lock");
            (0..6).filter_map(|i| d.config().bar(i).map(|b| (i, b))).collect()
        };
        for (bar, b) in bars {
            self.mmio.insert(b.addr, b.size, Arc::new(Mutex::new(BarRegion { device: device.clone(), bar })))?;
        }
        self.slots.push(device);
        Ok((self.slots.len() - 1) as u8)
    }

    fn function(&self, bus: u8, dev: u8, func: u8) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(dev as usize)
    }

    /// Configuration read of `data.len()` bytes.
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, offset: usize, data: &mut [u8]) {
        match self.function(bus, dev, func) {
            Some(d) => d.lock().expect("PCI device lock").config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Configuration write; moves the MMIO range of a BAR the guest moved.
    pub fn config_write(&self, bus: u8, dev: u8, func: u8, offset: usize, data: &[u8]) {
        let Some(device) = self.function(bus, dev, func) else { return };
        let mut d = device.lock().expect("PCI device lock");
        let Some(mv) = d.config_write(offset, data) else { return };
        let size = d.config().bar(mv.index).map(|b| b.size).unwrap_or(0);
        let region = self.mmio.remove(mv.old);
        let moved = match region {
            Some(r) => self.mmio.insert(mv.new, size, r),
            None => Err(BusError::Empty(mv.old)),
        };
        match moved {
            Ok(()) => {
                tracing::debug!("PCI 00:{dev:02x}.0 BAR{} moved {:#x} -> {:#x}", mv.index, mv.old, mv.new);
                d.bar_moved(mv);
            }
            Err(e) => {
                tracing::warn!("PCI 00:{dev:02x}.0: guest moved BAR{} to {:#x}: {e}; BAR unmapped", mv.index, mv.new)
            }
        }
    }
}

/// Configuration mechanism #1 (ports 0xcf8..0xd00).
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

/// Base port of configuration mechanism #1.
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// Ports it spans.
pub const PCI_CONFIG_IO_LEN: u16 = 8;

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    fn target(&self, data_offset: u64) -> Option<(u8, u8, u8, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) as u8;
        let dev = ((self.address >> 11) & 0x1f) as u8;
        let func = ((self.address >> 8) & 0x7) as u8;
        let reg = (self.address & 0xfc) as usize + data_offset as usize;
        Some((bus, dev, func, reg))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => match self.target(offset - 4) {
                Some((b, d, f, r)) => self.root.config_read(b, d, f, r, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes(data.try_into().expect("4 bytes")) & 0x80ff_fffc;
            }
            4..=7 => {
                if let Some((b, d, f, r)) = self.target(offset - 4) {
                    self.root.config_write(b, d, f, r, data);
                }
            }
            _ => {}
        }
    }
}

/// ECAM window (MMIO).
pub struct PciEcam {
    root: Arc<PciRoot>,
}

impl PciEcam {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciEcam { root }
    }
}

fn ecam_decode(offset: u64) -> (u8, u8, u8, usize) {
    ((offset >> 20) as u8, ((offset >> 15) & 0x1f) as u8, ((offset >> 12) & 0x7) as u8, (offset & 0xfff) as usize)
}

impl BusDevice for PciEcam {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let (b, d, f, r) = ecam_decode(offset);
        self.root.config_read(b, d, f, r, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (b, d, f, r) = ecam_decode(offset);
        self.root.config_write(b, d, f, r, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::BAR0;

    struct TestDev {
        config: PciConfig,
        bar_writes: Vec<(usize, u64, Vec<u8>)>,
        moves: Vec<BarMove>,
    }

    impl PciDevice for TestDev {
        fn config(&self) -> &PciConfig {
            &self.config
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
            self.config.write(offset, data)
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill((bar as u8) << 4 | offset as u8);
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.bar_writes.push((bar, offset, data.to_vec()));
        }
        fn bar_moved(&mut self, mv: BarMove) {
            self.moves.push(mv);
        }
    }

    fn setup() -> (Arc<Bus>, Arc<PciRoot>, Arc<Mutex<TestDev>>) {
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(mmio.clone());
        let mut config = PciConfig::new(PciIds {
            vendor: 0x1af4,
            device: 0x1041,
            class: 2,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 1,
        });
        config.add_bar(0, 0xc000_0000, 0x1000, false).unwrap();
        let dev = Arc::new(Mutex::new(TestDev { config, bar_writes: vec![], moves: vec![] }));
        assert_eq!(root.add(dev.clone()).unwrap(), 1);
        (mmio, Arc::new(root), dev)
    }

    fn cf8(io: &mut PciConfigIo, dev: u32, reg: u32) {
        io.write(0xcf8, 0, &(0x8000_0000 | dev << 11 | reg).to_le_bytes());
    }

    #[test]
    fn mechanism_1_reads_ids_and_absent_slots() {
        let (_m, root, _d) = setup();
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 0, 0);
        let mut v = [0u8; 4];
        io.read(0xcf8, 4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x0008_1b36, "host bridge");
        cf8(&mut io, 1, 0);
        io.read(0xcf8, 4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1041_1af4);
        let mut w = [0u8; 2];
        io.read(0xcf8, 6, &mut w); // byte lanes of the data window
        assert_eq!(u16::from_le_bytes(w), 0x1041);
        cf8(&mut io, 7, 0);
        io.read(0xcf8, 4, &mut v);
        assert_eq!(v, [0xff; 4], "empty slot");
        // The latch reads back (the kernel's type-1 probe).
        io.read(0xcf8, 0, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x8000_3800);
        // Disabled latch: all ones.
        io.write(0xcf8, 0, &0u32.to_le_bytes());
        io.read(0xcf8, 4, &mut v);
        assert_eq!(v, [0xff; 4]);
    }

    #[test]
    fn bar_allocator_aligns_and_runs_out() {
        let mut a = BarAllocator::new(0xc000_0000, 0xc002_0000);
        let x = a.allocate(0x8000).unwrap();
        let y = a.allocate(0x1000).unwrap();
        let z = a.allocate(0x8000).unwrap();
        assert_eq!(x % 0x8000, 0);
        assert_eq!(y % 0x1000, 0);
        assert_eq!(z % 0x8000, 0);
        assert!(x != z && (y < x || y >= x + 0x8000) && (y < z || y >= z + 0x8000));
        assert!(a.allocate(0x10_0000).is_err());
    }

    #[test]
    fn ecam_decodes_bus_device_function_register() {
        assert_eq!(ecam_decode(0), (0, 0, 0, 0));
        assert_eq!(ecam_decode((1 << 20) | (3 << 15) | (2 << 12) | 0x10), (1, 3, 2, 0x10));
        let (_m, root, _d) = setup();
        let mut ecam = PciEcam::new(root);
        let mut v = [0u8; 4];
        ecam.read(0, 1 << 15, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1041_1af4);
        ecam.read(0, (1 << 15) | (1 << 12), &mut v);
        assert_eq!(v, [0xff; 4], "function 1 absent");
        ecam.read(0, 1 << 20, &mut v);
        assert_eq!(v, [0xff; 4], "bus 1 absent");
        ecam.read(0, (1 << 15) | 0x100, &mut v);
        assert_eq!(v, [0; 4], "extended space exists and is zero");
    }

    #[test]
    fn bars_are_on_the_mmio_bus_and_follow_moves() {
        let (mmio, root, dev) = setup();
        let mut b = [0u8; 1];
        assert!(mmio.read(0xc000_0005, &mut b));
        assert_eq!(b, [0x05]);
        assert!(mmio.write(0xc000_0010, &[7]));
        assert_eq!(dev.lock().unwrap().bar_writes, vec![(0, 0x10, vec![7])]);

        let mut ecam = PciEcam::new(root);
        // Probe: no move.
        ecam.write(0, (1 << 15) | BAR0 as u64, &[0xff; 4]);
        ecam.write(0, (1 << 15) | BAR0 as u64, &0xc000_0000u32.to_le_bytes());
        assert!(dev.lock().unwrap().moves.is_empty());
        // Move.
        ecam.write(0, (1 << 15) | BAR0 as u64, &0xd000_0000u32.to_le_bytes());
        assert_eq!(dev.lock().unwrap().moves, vec![BarMove { index: 0, old: 0xc000_0000, new: 0xd000_0000 }]);
        assert!(!mmio.read(0xc000_0005, &mut b));
        assert!(mmio.read(0xd000_0005, &mut b));
    }
}
