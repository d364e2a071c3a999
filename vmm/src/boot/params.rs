//! The zero page (`struct boot_params`) and the e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::*;
use crate::memory::{ram_regions, GuestMem};

use super::BootError;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map for a guest with `mem_size` bytes of RAM.
///
/// Low RAM stops at the EBDA; the legacy area holding the ACPI tables is
/// reserved; RAM resumes at 1 MiB up to the MMIO gap, and after 4 GiB for the
/// rest. The PCIe ECAM window is reserved so the kernel accepts the MCFG.
pub fn build_e820(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM },
        E820Entry { addr: ACPI_START, size: BIOS_END - ACPI_START, kind: E820_RESERVED },
    ];
    for (addr, len) in ram_regions(mem_size) {
        let start = addr.0.max(HIMEM_START);
        let end = addr.0 + len;
        if end > start {
            map.push(E820Entry { addr: start, size: end - start, kind: E820_RAM });
        }
    }
    map.push(E820Entry { addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, kind: E820_RESERVED });
    map.sort_by_key(|e| e.addr);
    map
}

/// Fills and writes the zero page.
#[allow(clippy::too_many_arguments)]
pub fn configure_boot_params(
    mem: &GuestMem,
    mem_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initramfs: Option<(GuestAddress, u64)>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    match header {
        Some(h) => params.hdr = h,
        None => {
            // An ELF vmlinux has no setup header: fill what the kernel checks.
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = 0x5372_6448; // "HdrS"
            params.hdr.kernel_alignment = 0x0100_0000;
        }
    }
    params.hdr.type_of_loader = 0xff; // undefined boot loader
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initramfs {
        params.hdr.ramdisk_image = addr.0 as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp.0;

    let map = build_e820(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::E820Overflow);
    }
    for (i, e) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry { addr: e.addr, size: e.size, r#type: e.kind };
    }
    params.e820_entries = map.len() as u8;

    mem.write_obj(params, GuestAddress(ZERO_PAGE_START)).map_err(|_| BootError::ZeroPage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum()
    }

    #[test]
    fn e820_small_guest() {
        let map = build_e820(512 << 20);
        assert_eq!(map[0], E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM });
        assert_eq!(map[1].addr, ACPI_START);
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[2], E820Entry { addr: HIMEM_START, size: (512 << 20) - HIMEM_START, kind: E820_RAM });
        assert_eq!(map[3].addr, PCI_ECAM_START);
        assert_eq!(ram_total(&map), EBDA_START + (512 << 20) - HIMEM_START);
    }

    #[test]
    fn e820_large_guest_skips_the_gap() {
        let size = 6u64 << 30;
        let map = build_e820(size);
        let high: Vec<_> = map.iter().filter(|e| e.addr >= MMIO_GAP_END).collect();
        assert_eq!(high.len(), 1);
        assert_eq!(high[0].size, size - MMIO_GAP_START);
        for e in map.iter().filter(|e| e.kind == E820_RAM) {
            assert!(e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END);
        }
        // Entries are sorted and do not overlap.
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }

    #[test]
    fn zero_page_is_written() {
        let ram = crate::memory::GuestRam::new(64 << 20).unwrap();
        configure_boot_params(
            &ram.memory,
            64 << 20,
            None,
            10,
            Some((GuestAddress(0x300_0000), 4096)),
            GuestAddress(ACPI_START),
        )
        .unwrap();
        let p: boot_params = ram.memory.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 4096);
        assert_eq!({ p.acpi_rsdp_addr }, ACPI_START);
        assert_eq!(p.e820_entries, 4);
    }
}
