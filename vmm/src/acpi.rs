//! ACPI tables: RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT and MCFG.
//!
//! The guest has no firmware; these tables are all it learns about the
//! machine besides the e820 map. They live in the legacy BIOS area at
//! `ACPI_START` (the kernel finds the RSDP through `boot_params.acpi_rsdp_addr`
//! and also by scanning 0xe0000..0x100000).
//!
//! - FADT: hardware-reduced ACPI (no PM1 blocks, no SCI), with the sleep
//!   control/status registers and a reset register in I/O space; the power
//!   device (`devices::power`) turns writes to them into poweroff and reboot.
//! - MADT: one enabled local APIC per vCPU (APIC id = vCPU index), one IOAPIC.
//! - DSDT: `\_S5_` (the kernel only offers ACPI poweroff when S5 exists), COM1,
//!   the PCI host bridge PCI0 (bus 0, the 0xcf8 ports, I/O and the 32-bit
//!   memory window), the ECAM window as a motherboard resource, and a pvpanic
//!   device (QEMU0001) at `PVPANIC_PORT`.
//! - MCFG: the PCIe ECAM window, ready for the PCI host bridge.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::*;
use crate::memory::GuestMem;
use crate::pci::PCI_CONFIG_IO_PORT;

/// OEM id in every table header.
pub const OEM_ID: [u8; 6] = *b"RAYOS ";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"RAYOSVMM";
const OEM_REVISION: u32 = 1;

/// FADT IA-PC boot architecture flags: no VGA, no CMOS RTC.
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const IAPC_BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;
/// MADT flag: the machine also has dual 8259 PICs (KVM's in-kernel PIC).
const MADT_PCAT_COMPAT: u32 = 1;
/// The IOAPIC's id follows the vCPUs' APIC ids.
pub fn ioapic_id(cpus: u8) -> u8 {
    cpus
}

/// Errors placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error(
        "ACPI tables ({0} bytes) do not fit between {ACPI_START:#x} and {REAL_MODE_RESET_VECTOR:#x} (the reset stub)"
    )]
    TooLarge(u64),
    #[error("cannot write ACPI table {0} to guest memory")]
    Write(String),
}

/// The tables and where each goes.
pub struct AcpiTables {
    /// (guest address, bytes), RSDP first.
    pub tables: Vec<(GuestAddress, Vec<u8>)>,
}

impl AcpiTables {
    /// Address of the RSDP.
    pub fn rsdp(&self) -> GuestAddress {
        self.tables[0].0
    }

    /// Copies the tables into guest memory.
    pub fn write(&self, mem: &GuestMem) -> Result<(), AcpiError> {
        for (addr, bytes) in &self.tables {
            mem.write_slice(bytes, *addr)
                .map_err(|_| AcpiError::Write(String::from_utf8_lossy(&bytes[..4]).into_owned()))?;
        }
        Ok(())
    }
}

fn to_bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// Recomputes an ACPI table checksum (byte 9) so all bytes sum to zero.
pub fn fix_checksum(table: &mut [u8]) {
    table[9] = 0;
    let sum = table.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    table[9] = 0u8.wrapping_sub(sum);
}

/// The DSDT's AML body.
pub fn dsdt_aml() -> Vec<u8> {
    let pvpanic_hid: aml::AmlStr = "QEMU0001";
    let mut body = Vec::new();
    aml::Name::new("_S5_".into(), &aml::Package::new(vec![&5u8])).to_aml_bytes(&mut body);
    // One statement, so every temporary AML node lives until it is serialized.
    aml::Scope::new(
        "\\_SB_".into(),
        vec![
            &aml::Device::new(
                "COM1".into(),
                vec![
                    &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
                    &aml::Name::new("_UID".into(), &0u8),
                    &aml::Name::new(
                        "_CRS".into(),
                        &aml::ResourceTemplate::new(vec![
                            &aml::IO::new(SERIAL_PORT_BASE, SERIAL_PORT_BASE, 1, SERIAL_PORT_LEN as u8),
                            &aml::Interrupt::new(true, true, false, false, SERIAL_IRQ),
                        ]),
                    ),
                ],
            ),
            &aml::Device::new(
                "PCI0".into(),
                vec![
                    &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08")),
                    &aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03")),
                    &aml::Name::new("_ADR".into(), &0u8),
                    &aml::Name::new("_SEG".into(), &0u8),
                    &aml::Name::new("_UID".into(), &0u8),
                    &aml::Name::new("_BBN".into(), &0u8),
                    &aml::Name::new(
                        "_CRS".into(),
                        &aml::ResourceTemplate::new(vec![
                            &aml::AddressSpace::<u16>::new_bus_number(0, 0),
                            &aml::IO::new(PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT, 1, 8),
                            &aml::AddressSpace::<u16>::new_io(0x0000, 0x0cf7, None),
                            &aml::AddressSpace::<u16>::new_io(0x0d00, 0xffff, None),
                            &aml::AddressSpace::<u32>::new_memory(
                                aml::AddressSpaceCacheable::NotCacheable,
                                true,
                                PCI_MMIO32_START as u32,
                                (PCI_ECAM_START - 1) as u32,
                                None,
                            ),
                        ]),
                    ),
                ],
            ),
            // Motherboard resources: the ECAM window, so the kernel trusts the MCFG.
            &aml::Device::new(
                "MBRD".into(),
                vec![
                    &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02")),
                    &aml::Name::new("_UID".into(), &0u8),
                    &aml::Name::new(
                        "_CRS".into(),
                        &aml::ResourceTemplate::new(vec![&aml::Memory32Fixed::new(
                            false,
                            PCI_ECAM_START as u32,
                            PCI_ECAM_SIZE as u32,
                        )]),
                    ),
                ],
            ),
            &aml::Device::new(
                "PEVT".into(),
                vec![
                    &aml::Name::new("_HID".into(), &pvpanic_hid),
                    &aml::Name::new(
                        "_CRS".into(),
                        &aml::ResourceTemplate::new(vec![&aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1)]),
                    ),
                ],
            ),
        ],
    )
    .to_aml_bytes(&mut body);
    body
}

fn dsdt() -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.append_slice(&dsdt_aml());
    sdt.as_slice().to_vec()
}

fn io_gas(port: u16) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port as u64)
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .preferred_pm_profile(PmProfile::Unspecified);
    b.reset_reg = io_gas(ACPI_RESET_PORT);
    b.reset_value = ACPI_RESET_VALUE;
    b.sleep_control_reg = io_gas(ACPI_SLEEP_CONTROL_PORT);
    b.sleep_status_reg = io_gas(ACPI_SLEEP_STATUS_PORT);
    b.iapc_boot_arch = (IAPC_BOOT_ARCH_NO_VGA | IAPC_BOOT_ARCH_NO_CMOS_RTC).into();
    b.hypervisor_vendor_identity = u64::from_le_bytes(*b"RAYOSVMM").into();
    to_bytes(&b.finalize())
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION, LocalInterruptController::Address(APIC_START as u32));
    for id in 0..cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(ioapic_id(cpus), IOAPIC_START as u32, 0));
    let mut bytes = to_bytes(&m);
    // Header (36 bytes) + local interrupt controller address (4) + flags (4).
    bytes[40..44].copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    fix_checksum(&mut bytes);
    bytes
}

fn mcfg() -> Vec<u8> {
    let mut m = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let last_bus = ((PCI_ECAM_SIZE >> 20) - 1) as u8;
    m.add_ecam(PCI_ECAM_START, 0, 0, last_bus);
    to_bytes(&m)
}

fn align16(x: u64) -> u64 {
    (x + 15) & !15
}

/// Builds all tables for a machine with `cpus` vCPUs, laid out from `ACPI_START`.
pub fn build_tables(cpus: u8) -> Result<AcpiTables, AcpiError> {
    let rsdp_addr = ACPI_START;
    let mut next = align16(rsdp_addr + Rsdp::len() as u64);
    let mut place = |len: usize| {
        let a = next;
        next = align16(next + len as u64);
        a
    };

    let dsdt = dsdt();
    let dsdt_addr = place(dsdt.len());
    let fadt = fadt(dsdt_addr);
    let fadt_addr = place(fadt.len());
    let madt = madt(cpus);
    let madt_addr = place(madt.len());
    let mcfg = mcfg();
    let mcfg_addr = place(mcfg.len());

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for a in [fadt_addr, madt_addr, mcfg_addr] {
        xsdt.add_entry(a);
    }
    let xsdt = to_bytes(&xsdt);
    let xsdt_addr = place(xsdt.len());
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    if next > REAL_MODE_RESET_VECTOR {
        return Err(AcpiError::TooLarge(next - ACPI_START));
    }
    Ok(AcpiTables {
        tables: vec![
            (GuestAddress(rsdp_addr), rsdp),
            (GuestAddress(dsdt_addr), dsdt),
            (GuestAddress(fadt_addr), fadt),
            (GuestAddress(madt_addr), madt),
            (GuestAddress(mcfg_addr), mcfg),
            (GuestAddress(xsdt_addr), xsdt),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn table<'a>(t: &'a AcpiTables, sig: &[u8]) -> (u64, &'a [u8]) {
        t.tables.iter().find(|(_, b)| &b[..sig.len()] == sig).map(|(a, b)| (a.0, b.as_slice())).unwrap()
    }

    #[test]
    fn every_table_checksums_to_zero_and_has_its_length() {
        let t = build_tables(4).unwrap();
        let (_, rsdp) = table(&t, b"RSD PTR ");
        assert_eq!(rsdp.len(), 36);
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        for sig in [b"DSDT", b"FACP", b"APIC", b"MCFG", b"XSDT"] {
            let (_, b) = table(&t, sig);
            assert_eq!(sum(b), 0, "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(u32_at(b, 4) as usize, b.len(), "{} length", String::from_utf8_lossy(sig));
            assert_eq!(&b[10..16], &OEM_ID);
        }
    }

    #[test]
    fn layout_is_aligned_disjoint_and_inside_the_bios_area() {
        let t = build_tables(254).unwrap();
        assert_eq!(t.rsdp().0, ACPI_START);
        let mut spans: Vec<(u64, u64)> = t.tables.iter().map(|(a, b)| (a.0, a.0 + b.len() as u64)).collect();
        spans.sort();
        for (s, e) in &spans {
            assert_eq!(s % 16, 0);
            assert!(*s >= ACPI_START && *e <= REAL_MODE_RESET_VECTOR);
        }
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "tables overlap: {w:?}");
        }
    }

    #[test]
    fn pointers_chain_rsdp_to_xsdt_to_tables() {
        let t = build_tables(2).unwrap();
        let (_, rsdp) = table(&t, b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        let (xsdt_addr, xsdt) = table(&t, b"XSDT");
        assert_eq!(u64_at(rsdp, 24), xsdt_addr);
        let entries: Vec<u64> = (36..xsdt.len()).step_by(8).map(|o| u64_at(xsdt, o)).collect();
        let sigs: Vec<&[u8]> =
            entries.iter().map(|a| &t.tables.iter().find(|(ta, _)| ta.0 == *a).unwrap().1[..4]).collect();
        assert_eq!(sigs, vec![b"FACP".as_slice(), b"APIC", b"MCFG"]);
        let (dsdt_addr, _) = table(&t, b"DSDT");
        let (_, fadt) = table(&t, b"FACP");
        assert_eq!(u64_at(fadt, 140), dsdt_addr, "X_DSDT");
    }

    #[test]
    fn fadt_is_hardware_reduced_with_reset_and_sleep_registers() {
        let t = build_tables(1).unwrap();
        let (_, f) = table(&t, b"FACP");
        assert_eq!(f.len(), 276);
        assert_eq!(f[8], 6, "FADT major revision");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // RESET_REG (GAS at 116): system I/O, 8 bits, at the reset port.
        assert_eq!(f[116], 1);
        assert_eq!(f[117], 8);
        assert_eq!(u64_at(f, 120), ACPI_RESET_PORT as u64);
        assert_eq!(f[128], ACPI_RESET_VALUE);
        // SLEEP_CONTROL_REG at 244, SLEEP_STATUS_REG at 256.
        assert_eq!(u64_at(f, 248), ACPI_SLEEP_CONTROL_PORT as u64);
        assert_eq!(u64_at(f, 260), ACPI_SLEEP_STATUS_PORT as u64);
        let boot_arch = u16::from_le_bytes([f[109], f[110]]);
        assert_eq!(boot_arch, IAPC_BOOT_ARCH_NO_VGA | IAPC_BOOT_ARCH_NO_CMOS_RTC);
    }

    #[test]
    fn madt_lists_every_cpu_and_the_ioapic() {
        let t = build_tables(3).unwrap();
        let (_, m) = table(&t, b"APIC");
        assert_eq!(u32_at(m, 36), APIC_START as u32);
        assert_eq!(u32_at(m, 40), MADT_PCAT_COMPAT);
        let mut off = 44;
        let mut lapics = vec![];
        let mut ioapics = vec![];
        while off < m.len() {
            let (ty, len) = (m[off], m[off + 1] as usize);
            match ty {
                0 => lapics.push((m[off + 2], m[off + 3], u32_at(m, off + 4))),
                1 => ioapics.push((m[off + 2], u32_at(m, off + 4), u32_at(m, off + 8))),
                _ => panic!("unexpected MADT entry {ty}"),
            }
            off += len;
        }
        assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(ioapics, vec![(3, IOAPIC_START as u32, 0)]);
    }

    #[test]
    fn mcfg_describes_the_ecam_window() {
        let t = build_tables(1).unwrap();
        let (_, m) = table(&t, b"MCFG");
        assert_eq!(m.len(), 60);
        assert_eq!(u64_at(m, 44), PCI_ECAM_START);
        assert_eq!(u16::from_le_bytes([m[52], m[53]]), 0, "segment");
        assert_eq!((m[54], m[55]), (0, 255), "bus range");
    }

    #[test]
    fn dsdt_has_s5_com1_and_pvpanic() {
        let aml = dsdt_aml();
        let s5 = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0a, 0x05];
        assert_eq!(&aml[..s5.len()], &s5);
        let has = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"COM1"));
        assert!(has(b"QEMU0001\0"));
        // IO descriptor for COM1: 0x47, decode16, min, max, align, len.
        assert!(has(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
        assert!(has(&[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01]));
        assert!(has(b"PCI0"));
        assert!(has(b"MBRD"));
        // Memory32Fixed for the ECAM window: 0x86, length 9, read-only, base, size.
        let mut ecam = vec![0x86, 0x09, 0x00, 0x00];
        ecam.extend_from_slice(&(PCI_ECAM_START as u32).to_le_bytes());
        ecam.extend_from_slice(&(PCI_ECAM_SIZE as u32).to_le_bytes());
        assert!(has(&ecam));
    }

    #[test]
    fn tables_land_in_guest_memory() {
        let ram = crate::memory::GuestRam::new(32 << 20).unwrap();
        let t = build_tables(2).unwrap();
        t.write(&ram.memory).unwrap();
        let mut sig = [0u8; 8];
        ram.memory.read_slice(&mut sig, GuestAddress(ACPI_START)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }
}
