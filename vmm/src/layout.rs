//! Guest physical memory layout of a RayOS x86_64 virtual machine.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BIOS data (RAM, left zero)
//! 0x0000_0500  boot GDT, then the (empty) boot IDT
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_8ff0  initial stack of the boot vCPU (grows down)
//! 0x0000_9000  boot page tables: PML4, PDPT, four PDs (identity map of 4 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  end of low RAM (EBDA and legacy hole follow, not RAM)
//! 0x000e_0000  ACPI tables, RSDP first (reserved in the e820 map)
//! 0x000f_fff0  reset stub at the real-mode reset vector F000:FFF0
//! 0x0010_0000  kernel (bzImage protected-mode part or ELF segments)
//!   ...        RAM up to min(memory, MMIO_GAP_START); initramfs at its top
//! 0xc000_0000  32-bit MMIO gap: PCI BARs
//! 0xe000_0000  PCIe ECAM (MCFG), 256 buses
//! 0xfec0_0000  IOAPIC
//! 0xfee0_0000  local APICs
//! 0x1_0000_0000 RAM beyond the gap, when memory > MMIO_GAP_START
//! ```

/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (limit 0: any exception during early boot is a triple fault).
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Top-level page table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the four page directories (2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we place (the x86 kernel's COMMAND_LINE_SIZE is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of usable low memory (start of the EBDA).
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables start (the RSDP; the kernel also scans 0xe0000..0x100000).
pub const ACPI_START: u64 = 0xe0000;
/// Physical address of the real-mode reset vector F000:FFF0. There is no
/// firmware; a small stub here resets the VM (see `arch::regs::RESET_STUB`).
pub const REAL_MODE_RESET_VECTOR: u64 = 0xffff0;
/// End of the legacy BIOS area.
pub const BIOS_END: u64 = 0x10_0000;
/// Start of high memory: where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// 32-bit PCI memory window for BARs: `[PCI_MMIO32_START, PCI_ECAM_START)`.
pub const PCI_MMIO32_START: u64 = MMIO_GAP_START;
/// PCIe enhanced configuration space (ECAM), described by MCFG.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// ECAM size: 256 buses x 32 devices x 8 functions x 4 KiB.
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// Default IOAPIC base address.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Default local APIC base address.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM needs three pages for the TSS (Intel VMX) just below the identity map page.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM identity-map page for real mode on Intel VMX.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// Size of the identity map set up for the boot vCPU.
pub const BOOT_IDENTITY_MAP_SIZE: u64 = 4 << 30;

/// 16550 UART (COM1) port base and its legacy IRQ.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// COM1's port range length.
pub const SERIAL_PORT_LEN: u16 = 8;
/// COM1's IRQ (GSI).
pub const SERIAL_IRQ: u32 = 4;
/// ACPI hardware-reduced sleep control register (FADT SLEEP_CONTROL_REG).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI hardware-reduced sleep status register (FADT SLEEP_STATUS_REG).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (FADT RESET_REG).
pub const ACPI_RESET_PORT: u16 = 0x604;
/// Value the guest writes to the reset register to reset the machine.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// pvpanic device port (ACPI id QEMU0001), the port QEMU uses too.
pub const PVPANIC_PORT: u16 = 0x505;
/// i8042 command port: writing 0xfe pulses the CPU reset line.
pub const I8042_COMMAND_PORT: u16 = 0x64;
