//! Registers, MSRs, FPU and local APIC of a vCPU at power-on.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::*;
use crate::memory::GuestMem;

/// Errors setting up vCPU state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write boot {0} to guest memory")]
    Memory(&'static str),
    #[error("KVM refused the vCPU {what}: {source}")]
    Kvm { what: &'static str, source: kvm_ioctls::Error },
    #[error("KVM accepted only {set} of {total} boot MSRs")]
    Msrs { set: usize, total: usize },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

// Control register and EFER bits.
const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// A GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub const BOOT_GDT: [u64; 4] =
    [gdt_entry(0, 0, 0), gdt_entry(0xa09b, 0, 0xfffff), gdt_entry(0xc093, 0, 0xfffff), gdt_entry(0x808b, 0, 0xfffff)];

/// Decodes a GDT entry into the segment KVM wants.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 { (limit_raw << 12) | 0xfff } else { limit_raw };
    kvm_segment {
        base,
        limit,
        selector: (index as u16) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 0 { 1 } else { 0 },
        padding: 0,
    }
}

/// Writes identity-mapped page tables for the first 4 GiB (2 MiB pages).
pub fn write_page_tables(mem: &GuestMem) -> Result<(), RegsError> {
    let err = |_| RegsError::Memory("page tables");
    mem.write_obj(PDPTE_START | 0x3, GuestAddress(PML4_START)).map_err(err)?;
    let pds = BOOT_IDENTITY_MAP_SIZE >> 30;
    for i in 0..pds {
        let pd = PDE_START + i * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPTE_START + i * 8)).map_err(err)?;
        let mut table = [0u64; 512];
        for (j, e) in table.iter_mut().enumerate() {
            // present | writable | page size (2 MiB)
            *e = (((i << 9) + j as u64) << 21) | 0x83;
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(pd)).map_err(err)?;
    }
    Ok(())
}

/// Writes the boot GDT and an empty IDT.
pub fn write_gdt_idt(mem: &GuestMem) -> Result<(), RegsError> {
    let bytes: Vec<u8> = BOOT_GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(BOOT_GDT_START)).map_err(|_| RegsError::Memory("GDT"))?;
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START)).map_err(|_| RegsError::Memory("IDT"))
}

/// Real-mode code at the reset vector F000:FFF0, where firmware would be:
/// `mov dx, ACPI_RESET_PORT; mov al, ACPI_RESET_VALUE; out dx, al; cli;
/// hlt; jmp hlt`.
///
/// A guest that reboots "through the BIOS" lands here. Linux does so on a
/// hardware-reduced ACPI platform without EFI: its reboot order is then EFI
/// (absent), then the BIOS (`machine_real_restart`, a far jump to
/// F000:FFF0), so without this stub `reboot` and `panic=-1` would leave the
/// vCPU running whatever bytes lie at 0xffff0. The stub turns that jump into
/// the platform's ACPI reset, which ends the VM like any other reset.
pub const RESET_STUB: [u8; 11] = [
    0xba,
    ACPI_RESET_PORT as u8,
    (ACPI_RESET_PORT >> 8) as u8,
    0xb0,
    ACPI_RESET_VALUE,
    0xee,
    0xfa,
    0xf4,
    0xeb,
    0xfd,
    0x90,
];

/// Writes [`RESET_STUB`] at the real-mode reset vector (in the e820
/// reserved legacy area, which the guest does not allocate).
pub fn write_reset_stub(mem: &GuestMem) -> Result<(), RegsError> {
    mem.write_slice(&RESET_STUB, GuestAddress(REAL_MODE_RESET_VECTOR)).map_err(|_| RegsError::Memory("reset stub"))
}

/// Special registers for 64-bit entry: long mode, paging, flat segments.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    let tss = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// Sets the boot vCPU's special and general registers for the 64-bit boot protocol.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), RegsError> {
    let sregs = vcpu.get_sregs().map_err(kvm("special registers (get)"))?;
    vcpu.set_sregs(&long_mode_sregs(sregs)).map_err(kvm("special registers"))?;
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("registers"))
}

/// FPU at reset: x87 control word and MXCSR defaults.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(kvm("FPU"))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 0x6;

/// The MSRs every vCPU starts with.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry { index, data, ..Default::default() };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        e(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// The guest's MSR_LSTAR: the address of its 64-bit syscall entry. A Linux
/// guest's `entry_SYSCALL_64`, so `rip - lstar` places a RIP in its
/// System.map whatever KASLR chose.
pub fn read_lstar(vcpu: &VcpuFd) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_LSTAR, ..Default::default() }]).ok()?;
    (vcpu.get_msrs(&mut msrs).ok()? == 1).then(|| msrs.as_slice()[0].data)
}

/// Sets the boot MSRs.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).expect("few MSRs fit the FAM wrapper");
    let set = vcpu.set_msrs(&msrs).map_err(kvm("MSRs"))?;
    if set != entries.len() {
        return Err(RegsError::Msrs { set, total: entries.len() });
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Local APIC: LINT0 as ExtINT (the PIC), LINT1 as NMI, as firmware leaves them.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("local APIC (get)"))?;
    for (off, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[off + i] as u8);
        let v = set_delivery_mode(u32::from_le_bytes(bytes), mode).to_le_bytes();
        for (reg, byte) in lapic.regs[off..off + 4].iter_mut().zip(v) {
            *reg = byte as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("local APIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_reference_encoding() {
        assert_eq!(BOOT_GDT[0], 0);
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn segments_decode() {
        let cs = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!((cs.selector, cs.type_, cs.l, cs.db, cs.present, cs.s, cs.g), (8, 0xb, 1, 0, 1, 1, 1));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((ds.selector, ds.type_, ds.l, ds.db), (16, 3, 0, 1));
        let tr = segment_from_gdt(BOOT_GDT[3], 3);
        assert_eq!((tr.selector, tr.type_, tr.s), (24, 0xb, 0));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn long_mode_control_registers() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(s.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.cs.l, 1);
    }

    #[test]
    fn reset_stub_writes_the_acpi_reset_register_and_halts() {
        // mov dx, imm16
        assert_eq!(RESET_STUB[0], 0xba);
        assert_eq!(u16::from_le_bytes([RESET_STUB[1], RESET_STUB[2]]), ACPI_RESET_PORT);
        // mov al, imm8; out dx, al
        assert_eq!(&RESET_STUB[3..6], &[0xb0, ACPI_RESET_VALUE, 0xee]);
        // cli; hlt; jmp back to the hlt (rel8 -3 from the end of the jmp)
        assert_eq!(&RESET_STUB[6..10], &[0xfa, 0xf4, 0xeb, 0xfd]);
        assert!(REAL_MODE_RESET_VECTOR + RESET_STUB.len() as u64 <= BIOS_END);

        let ram = crate::memory::GuestRam::new(32 << 20).unwrap();
        write_reset_stub(&ram.memory).unwrap();
        let mut got = [0u8; RESET_STUB.len()];
        ram.memory.read_slice(&mut got, GuestAddress(REAL_MODE_RESET_VECTOR)).unwrap();
        assert_eq!(got, RESET_STUB);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let ram = crate::memory::GuestRam::new(32 << 20).unwrap();
        write_page_tables(&ram.memory).unwrap();
        let pml4: u64 = ram.memory.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        for i in 0..4u64 {
            let pdpte: u64 = ram.memory.read_obj(GuestAddress(PDPTE_START + i * 8)).unwrap();
            assert_eq!(pdpte, (PDE_START + i * 0x1000) | 3);
        }
        // The local APIC page (0xfee00000) is mapped to itself.
        let idx = APIC_START >> 21;
        let pde: u64 = ram.memory.read_obj(GuestAddress(PDE_START + idx * 8)).unwrap();
        assert_eq!(pde & !0xfff, APIC_START & !0x1f_ffff);
        assert_eq!(pde & 0x83, 0x83);
    }

    #[test]
    fn lapic_delivery_modes() {
        assert_eq!(set_delivery_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(set_delivery_mode(0xffff_ffff, APIC_MODE_NMI), 0xffff_fcff);
    }

    #[test]
    fn boot_msrs_enable_mtrrs() {
        let m = boot_msr_entries();
        let def = m.iter().find(|e| e.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(def.data, 0x806);
    }
}
