//! Linux boot: kernel and initramfs loading, the zero page, e820 map and
//! command line (Linux x86 boot protocol, Documentation/arch/x86/boot.rst).
//!
//! The VMM enters the kernel directly in 64-bit mode (the 64-bit boot
//! protocol): for a bzImage at `startup_64` (load address + 0x200), for an ELF
//! vmlinux at its entry point. No firmware runs.

mod loader;
mod params;

pub use loader::{initramfs_address, load_cmdline, load_initramfs, load_kernel, BootError, KernelEntry};
pub use params::{build_e820, configure_boot_params, E820Entry, E820_RAM, E820_RESERVED};
