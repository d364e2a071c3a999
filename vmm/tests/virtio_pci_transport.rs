//! Tier 1: the virtio-pci transport driven the way a guest driver drives it,
//! through PCI configuration space and BAR 0, with a fake device model.
//! KVM (/dev/kvm) provides the VM for ioeventfds, irqfds and GSI routing.

use std::sync::{Arc, Mutex};

use kvm_ioctls::Kvm;
use rayos_vmm::interrupt::MsiRouter;
use rayos_vmm::memory::GuestRam;
use rayos_vmm::pci::PciDevice;
use rayos_vmm::virtio::transport::common_config::QueueState;
use rayos_vmm::virtio::transport::pci::*;
use rayos_vmm::virtio::{status, ActivateError, Activation, VirtioDevice, NO_VECTOR, VIRTIO_F_VERSION_1};

#[derive(Default)]
struct Log {
    activated: Vec<(u64, Vec<(usize, QueueState)>)>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    /// The device's interrupt eventfds, as a backend would hold them.
    calls: Vec<vmm_sys_util::eventfd::EventFd>,
}

struct Fake(Arc<Mutex<Log>>);

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        26
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![128, 64]
    }
    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << 28)
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.0.lock().unwrap().config_writes.push((offset, data.to_vec()));
    }
    fn activate(&mut self, a: Activation<'_>) -> Result<(), ActivateError> {
        let mut l = self.0.lock().unwrap();
        l.calls = a.calls.iter().map(|c| c.try_clone().unwrap()).collect();
        l.activated.push((a.features, a.queues));
        Ok(())
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
}

const BAR: u64 = 0xc000_0000;

fn setup() -> (VirtioPciDevice, Arc<Mutex<Log>>, GuestRam) {
    let (d, log, ram, _) = setup_with_vcpu();
    (d, log, ram)
}

/// [`setup`] with vCPU 0 of the VM, whose local APIC receives the MSIs.
fn setup_with_vcpu() -> (VirtioPciDevice, Arc<Mutex<Log>>, GuestRam, kvm_ioctls::VcpuFd) {
    assert!(std::path::Path::new("/dev/kvm").exists(), "this test needs /dev/kvm");
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let ram = GuestRam::new(32 << 20).unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let router = Arc::new(MsiRouter::new(Arc::new(vm)));
    let dev = VirtioPciDevice::new("test", Box::new(Fake(log.clone())), ram.memory.clone(), router, BAR).unwrap();
    (dev, log, ram, vcpu)
}

fn cfg_read(d: &mut VirtioPciDevice, off: usize, len: usize) -> u32 {
    let mut b = vec![0u8; len];
    d.config_read(off, &mut b);
    b.iter().enumerate().fold(0, |a, (i, x)| a | (*x as u32) << (i * 8))
}

fn bar_read(d: &mut VirtioPciDevice, off: u64, len: usize) -> u64 {
    let mut b = vec![0u8; len];
    d.bar_read(0, off, &mut b);
    b.iter().enumerate().fold(0, |a, (i, x)| a | (*x as u64) << (i * 8))
}

fn bar_write(d: &mut VirtioPciDevice, off: u64, len: usize, v: u64) {
    let b: Vec<u8> = (0..len).map(|i| (v >> (i * 8)) as u8).collect();
    d.bar_write(0, off, &b);
}

/// Walks the capability list: (id, offset, virtio cfg_type).
fn caps(d: &mut VirtioPciDevice) -> Vec<(u8, usize, u8)> {
    let mut v = vec![];
    let mut p = cfg_read(d, 0x34, 1) as usize;
    while p != 0 {
        v.push((cfg_read(d, p, 1) as u8, p, cfg_read(d, p + 3, 1) as u8));
        p = cfg_read(d, p + 1, 1) as usize;
        assert!(v.len() < 16, "capability loop");
    }
    v
}

#[test]
fn pci_identity_and_capability_chain() {
    let (mut d, _, _) = setup();
    assert_eq!(cfg_read(&mut d, 0, 4), 0x105a_1af4, "virtio 1.0 id for device type 26");
    assert_ne!(cfg_read(&mut d, 6, 2) & (1 << 4), 0, "capability list present");
    let c = caps(&mut d);
    let vendor: Vec<u8> = c.iter().filter(|x| x.0 == 0x09).map(|x| x.2).collect();
    assert_eq!(vendor, vec![1, 2, 3, 4, 5], "common, notify, isr, device, pci-cfg");
    let msix = c.iter().find(|x| x.0 == 0x11).unwrap().1;
    assert_eq!(cfg_read(&mut d, msix + 2, 2) & 0x7ff, 2, "3 vectors: one per queue plus config");
    assert_eq!(cfg_read(&mut d, msix + 4, 4), MSIX_TABLE_OFFSET as u32);
    let notify = c.iter().find(|x| x.2 == 2).unwrap().1;
    assert_eq!(cfg_read(&mut d, notify + 16, 4), NOTIFY_MULTIPLIER);
    // BAR 0: 64-bit memory BAR at BAR, sized BAR_SIZE.
    assert_eq!(cfg_read(&mut d, 0x10, 4), (BAR as u32) | 0x4);
    d.config_write(0x10, &[0xff; 4]);
    assert_eq!(cfg_read(&mut d, 0x10, 4), !(BAR_SIZE as u32 - 1) | 0x4);
    d.config_write(0x10, &(BAR as u32).to_le_bytes());
}

#[test]
fn driver_sequence_activates_the_device_with_its_queues() {
    let (mut d, log, ram) = setup();
    let st = |d: &mut VirtioPciDevice, s: u8| bar_write(d, 0x14, 1, s as u64);
    st(&mut d, status::ACKNOWLEDGE);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER);
    bar_write(&mut d, 0x00, 4, 1);
    assert_eq!(bar_read(&mut d, 0x04, 4), 1, "VERSION_1 offered");
    bar_write(&mut d, 0x08, 4, 0);
    bar_write(&mut d, 0x0c, 4, 1 << 28);
    bar_write(&mut d, 0x08, 4, 1);
    bar_write(&mut d, 0x0c, 4, 1);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_ne!(bar_read(&mut d, 0x14, 1) as u8 & status::FEATURES_OK, 0);

    // MSI-X on, vectors unmasked, config vector 2, queue 0 vector 0.
    let msix = caps(&mut d).iter().find(|x| x.0 == 0x11).unwrap().1;
    d.config_write(msix + 2, &(0x8000u16 | 2).to_le_bytes());
    for v in 0..3u64 {
        bar_write(&mut d, MSIX_TABLE_OFFSET + v * 16, 4, 0xfee0_0000);
        bar_write(&mut d, MSIX_TABLE_OFFSET + v * 16 + 8, 4, 0x30 + v);
        bar_write(&mut d, MSIX_TABLE_OFFSET + v * 16 + 12, 4, 0);
    }
    bar_write(&mut d, 0x10, 2, 2);
    assert_eq!(bar_read(&mut d, 0x10, 2), 2);

    // Queue 0: size 64, rings in RAM, vector 0; queue 1 left disabled.
    bar_write(&mut d, 0x16, 2, 0);
    assert_eq!(bar_read(&mut d, 0x18, 2), 128);
    bar_write(&mut d, 0x18, 2, 64);
    bar_write(&mut d, 0x1a, 2, 0);
    bar_write(&mut d, 0x1a, 2, 9); // no such vector
    assert_eq!(bar_read(&mut d, 0x1a, 2), NO_VECTOR as u64);
    bar_write(&mut d, 0x1a, 2, 0);
    bar_write(&mut d, 0x20, 8, 0x10000);
    bar_write(&mut d, 0x28, 8, 0x11000);
    bar_write(&mut d, 0x30, 8, 0x12000);
    bar_write(&mut d, 0x1c, 2, 1);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);

    let l = log.lock().unwrap();
    assert_eq!(l.activated.len(), 1);
    let (features, queues) = &l.activated[0];
    assert_eq!(*features, (1 << 32) | (1 << 28));
    assert_eq!(queues.len(), 1);
    assert_eq!((queues[0].0, queues[0].1.size, queues[0].1.desc), (0, 64, 0x10000));
    let call = l.calls[0].try_clone().unwrap();
    drop(l);

    // The state report reads the rings' indexes from guest memory: 7
    // requests made available, 5 used, and the interrupt that follows.
    use vm_memory::{Bytes, GuestAddress};
    ram.memory.write_obj(7u16, GuestAddress(0x11002)).unwrap();
    ram.memory.write_obj(5u16, GuestAddress(0x12002)).unwrap();
    let r = d.report();
    assert!(r.starts_with("test: status=0x0f active=true"), "{r}");
    assert!(r.contains("; q0 size=64 avail=7 used=5 vector=0"), "{r}");
    assert!(!r.contains("q1"), "a queue the driver did not enable is left out: {r}");
    // Masking vector 0 leaves a raised interrupt waiting in the eventfd.
    bar_write(&mut d, MSIX_TABLE_OFFSET + 12, 4, 1);
    call.write(1).unwrap();
    assert!(d.report().contains("vector=0 (may not deliver) call-signalled"), "{}", d.report());

    // Device configuration window and the PCI-cfg access window.
    assert_eq!(bar_read(&mut d, DEVICE_OFFSET + 4, 2), 0x0504);
    bar_write(&mut d, DEVICE_OFFSET + 8, 1, 0xaa);
    assert_eq!(log.lock().unwrap().config_writes, vec![(8, vec![0xaa])]);
    let pci_cfg = caps(&mut d).iter().find(|x| x.2 == 5).unwrap().1;
    d.config_write(pci_cfg + 4, &[0]);
    d.config_write(pci_cfg + 8, &(0x12u32).to_le_bytes());
    d.config_write(pci_cfg + 12, &(2u32).to_le_bytes());
    assert_eq!(cfg_read(&mut d, pci_cfg + 16, 2), 2, "num_queues through VIRTIO_PCI_CAP_PCI_CFG");

    // Reset.
    st(&mut d, 0);
    assert_eq!(log.lock().unwrap().resets, 1);
    assert_eq!(bar_read(&mut d, 0x14, 1), 0);
}

#[test]
fn a_queue_outside_ram_puts_the_device_in_needs_reset() {
    let (mut d, log, _ram) = setup();
    for s in [1u8, 3] {
        bar_write(&mut d, 0x14, 1, s as u64);
    }
    bar_write(&mut d, 0x08, 4, 1);
    bar_write(&mut d, 0x0c, 4, 1);
    bar_write(&mut d, 0x14, 1, 0xb);
    bar_write(&mut d, 0x16, 2, 1);
    bar_write(&mut d, 0x20, 8, 0x7fff_ffff_f000); // far outside 32 MiB of RAM
    bar_write(&mut d, 0x28, 8, 0x11000);
    bar_write(&mut d, 0x30, 8, 0x12000);
    bar_write(&mut d, 0x1c, 2, 1);
    bar_write(&mut d, 0x14, 1, 0xf);
    assert!(log.lock().unwrap().activated.is_empty());
    let s = bar_read(&mut d, 0x14, 1) as u8;
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(bar_read(&mut d, ISR_OFFSET, 1) & 2, 0, "configuration-change ISR bit");
    assert_eq!(bar_read(&mut d, ISR_OFFSET, 1), 0, "ISR clears on read");
}

#[test]
fn every_width_and_offset_of_bar0_and_config_space_is_safe() {
    let (mut d, _, _) = setup();
    // Reads and writes of every width at every offset of the config space and
    // of the BAR never panic; odd widths read as all ones or zeros.
    for off in 0..4096usize {
        for len in [1usize, 2, 3, 4, 8] {
            let mut b = vec![0u8; len];
            d.config_read(off, &mut b);
            if off % 8 == 0 && (0x40..0x100).contains(&off) {
                // Leave capabilities intact for the BAR sweep below.
                continue;
            }
            if (0x10..0x18).contains(&off) || off == 0x04 {
                continue;
            }
            d.config_write(off, &b);
        }
    }
    for off in (0..BAR_SIZE + 8).step_by(1) {
        for len in [1usize, 2, 4, 8] {
            let mut b = vec![0u8; len];
            d.bar_read(0, off, &mut b);
            if off < 0x3c && (0x14..0x15).contains(&off) {
                continue; // status writes are exercised elsewhere
            }
            d.bar_write(0, off, &b);
        }
    }
    assert_eq!(cfg_read(&mut d, 0, 4), 0x105a_1af4, "identity survived");
}

/// Whether `vector` is requested in the vCPU's local APIC (IRR).
fn apic_requested(vcpu: &kvm_ioctls::VcpuFd, vector: u8) -> bool {
    let lapic = vcpu.get_lapic().unwrap();
    let off = 0x200 + (vector as usize / 32) * 0x10;
    let word = u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[off + i] as u8));
    word & (1 << (vector % 32)) != 0
}

#[test]
fn an_interrupt_raised_while_its_vector_is_masked_is_pending_and_delivered_on_unmask() {
    let (mut d, log, _ram, vcpu) = setup_with_vcpu();
    // The local APIC, software-enabled (spurious vector register, bit 8).
    let mut lapic = vcpu.get_lapic().unwrap();
    lapic.regs[0xf1] |= 1;
    vcpu.set_lapic(&lapic).unwrap();

    // Driver set-up: MSI-X on, vector 0 -> APIC vector 0x30, queue 0 on vector 0.
    let st = |d: &mut VirtioPciDevice, s: u8| bar_write(d, 0x14, 1, s as u64);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER);
    bar_write(&mut d, 0x08, 4, 1);
    bar_write(&mut d, 0x0c, 4, 1);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    let msix = caps(&mut d).iter().find(|x| x.0 == 0x11).unwrap().1;
    d.config_write(msix + 2, &0x8000u16.to_le_bytes());
    bar_write(&mut d, MSIX_TABLE_OFFSET, 4, 0xfee0_0000);
    bar_write(&mut d, MSIX_TABLE_OFFSET + 8, 4, 0x30);
    bar_write(&mut d, MSIX_TABLE_OFFSET + 12, 4, 0);
    bar_write(&mut d, 0x16, 2, 0);
    bar_write(&mut d, 0x18, 2, 64);
    bar_write(&mut d, 0x1a, 2, 0);
    bar_write(&mut d, 0x20, 8, 0x10000);
    bar_write(&mut d, 0x28, 8, 0x11000);
    bar_write(&mut d, 0x30, 8, 0x12000);
    bar_write(&mut d, 0x1c, 2, 1);
    st(&mut d, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    let call = log.lock().unwrap().calls[0].try_clone().unwrap();

    // The driver masks the vector; the device raises an interrupt meanwhile.
    bar_write(&mut d, MSIX_TABLE_OFFSET + 12, 4, 1);
    call.write(1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(bar_read(&mut d, MSIX_PBA_OFFSET, 8) & 1, 1, "vector 0's pending bit");
    assert!(!apic_requested(&vcpu, 0x30), "delivered while masked");

    // Unmasking delivers it.
    bar_write(&mut d, MSIX_TABLE_OFFSET + 12, 4, 0);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !apic_requested(&vcpu, 0x30) {
        assert!(std::time::Instant::now() < end, "the interrupt raised while masked was lost on unmask");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(bar_read(&mut d, MSIX_PBA_OFFSET, 8) & 1, 0, "no longer pending once delivered");

    // A vector masked through the function mask holds interrupts the same way.
    d.config_write(msix + 2, &0xc000u16.to_le_bytes());
    call.write(1).unwrap();
    assert_eq!(bar_read(&mut d, MSIX_PBA_OFFSET, 8) & 1, 1, "pending under the function mask");
    // A reset forgets what was pending.
    st(&mut d, 0);
    assert_eq!(bar_read(&mut d, MSIX_PBA_OFFSET, 8) & 1, 0, "nothing pending after a reset");
}
