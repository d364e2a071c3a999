//! KVM GSI routing: the legacy IRQ lines plus one MSI route per MSI-X vector.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so the router keeps it:
//! GSIs 0-23 route to the IOAPIC (and 0-15 also to the PICs), as KVM's
//! default table does; GSIs from 24 up are handed out to MSI-X vectors and
//! carry an MSI route only while the vector may deliver.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

/// First GSI handed out for MSI.
pub const FIRST_MSI_GSI: u32 = 24;
/// KVM's routing table limit on x86 (KVM_MAX_IRQ_ROUTES is 4096).
const MAX_GSI: u32 = 4096;

/// Errors of the router.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    #[error("out of GSIs for MSI-X vectors")]
    NoGsi,
    #[error("KVM refused the GSI routing table: {0}")]
    Routing(kvm_ioctls::Error),
    #[error("cannot build the GSI routing table: {0}")]
    Table(String),
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_IRQCHIP, ..Default::default() };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_entry(gsi: u32, addr: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
    e.u.msi.address_lo = addr as u32;
    e.u.msi.address_hi = (addr >> 32) as u32;
    e.u.msi.data = data;
    e
}

/// The legacy part of the table, as KVM sets it up with the in-kernel irqchip.
pub fn legacy_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..24 {
        if gsi < 16 {
            let chip = if gsi < 8 { KVM_IRQCHIP_PIC_MASTER } else { KVM_IRQCHIP_PIC_SLAVE };
            v.push(irqchip_entry(gsi, chip, gsi % 8));
        }
        v.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

struct State {
    msi: BTreeMap<u32, Option<(u64, u32)>>,
    next: u32,
}

/// See the module documentation.
pub struct MsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<State>,
}

impl MsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        MsiRouter { vm, state: Mutex::new(State { msi: BTreeMap::new(), next: FIRST_MSI_GSI }) }
    }

    /// The VM, for irqfd registration.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// Hands out a GSI (no route yet).
    pub fn allocate(&self) -> Result<u32, InterruptError> {
        let mut s = self.state.lock().expect("router lock");
        if s.next >= MAX_GSI {
            return Err(InterruptError::NoGsi);
        }
        let gsi = s.next;
        s.next += 1;
        s.msi.insert(gsi, None);
        Ok(gsi)
    }

    /// Sets (Some) or withdraws (None) the MSI route of `gsi` and updates KVM.
    pub fn set_route(&self, gsi: u32, route: Option<(u64, u32)>) -> Result<(), InterruptError> {
        let mut s = self.state.lock().expect("router lock");
        if s.msi.get(&gsi) == Some(&route) {
            return Ok(());
        }
        s.msi.insert(gsi, route);
        let mut entries = legacy_routes();
        entries.extend(s.msi.iter().filter_map(|(g, r)| r.map(|(a, d)| msi_entry(*g, a, d))));
        let table = KvmIrqRouting::from_entries(&entries).map_err(|e| InterruptError::Table(format!("{e:?}")))?;
        self.vm.set_gsi_routing(&table).map_err(InterruptError::Routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_table_matches_kvm_default() {
        let v = legacy_routes();
        assert_eq!(v.len(), 16 * 2 + 8);
        // SAFETY: (test) reading the union member the entry was built with.
        let pins: Vec<(u32, u32, u32)> =
            v.iter().map(|e| unsafe { (e.gsi, e.u.irqchip.irqchip, e.u.irqchip.pin) }).collect();
        assert!(pins.contains(&(4, KVM_IRQCHIP_IOAPIC, 4)));
        assert!(pins.contains(&(4, KVM_IRQCHIP_PIC_MASTER, 4)));
        assert!(pins.contains(&(10, KVM_IRQCHIP_PIC_SLAVE, 2)));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
        assert!(!pins.iter().any(|p| p.0 >= 16 && p.1 != KVM_IRQCHIP_IOAPIC));
    }

    #[test]
    fn msi_entries_split_the_address() {
        let e = msi_entry(30, 0x1_fee0_1000, 0x4041);
        assert_eq!((e.gsi, e.type_), (30, KVM_IRQ_ROUTING_MSI));
        // SAFETY: (test) reading the union member the entry was built with.
        let (lo, hi, data) = unsafe { (e.u.msi.address_lo, e.u.msi.address_hi, e.u.msi.data) };
        assert_eq!((lo, hi, data), (0xfee0_1000, 1, 0x4041));
    }
}
