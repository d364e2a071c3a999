//! Reading a stopped guest's kernel stack for a state report: a 4-level
//! x86-64 page walk from CR3 (no writes, no accessed bits), and the words
//! on the stack that point into the kernel's text, as offsets from its
//! syscall entry (MSR_LSTAR). Those offsets name functions in the guest
//! kernel's symbol table whatever address KASLR chose, so a report of a
//! hung guest is a rough backtrace without guest cooperation.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Physical-address bits of a page-table entry (bits 12..52).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// CR4.LA57: 5-level paging, which this walk does not follow.
const CR4_LA57: u64 = 1 << 12;
/// Kernel text lies within this distance of the syscall entry.
pub const TEXT_SPAN: u64 = 64 << 20;

/// The guest-physical address of `va` under `cr3`, if mapped.
pub fn translate<M: GuestMemory>(mem: &M, cr3: u64, cr4: u64, va: u64) -> Option<u64> {
    if cr4 & CR4_LA57 != 0 {
        return None;
    }
    let mut table = cr3 & ADDR_MASK;
    for (level, shift) in [(4u32, 39u32), (3, 30), (2, 21), (1, 12)] {
        let index = (va >> shift) & 0x1ff;
        let entry: u64 = mem.read_obj(GuestAddress(table + index * 8)).ok()?;
        if entry & PRESENT == 0 {
            return None;
        }
        if (level == 3 || level == 2) && entry & PAGE_SIZE_BIT != 0 {
            let mask = (1u64 << shift) - 1;
            return Some((entry & ADDR_MASK & !mask) | (va & mask));
        }
        table = entry & ADDR_MASK;
    }
    Some(table | (va & 0xfff))
}

/// The first `words` stack words at `rsp` that fall within [`TEXT_SPAN`]
/// of `lstar`, as signed offsets from it (return addresses, mostly).
pub fn text_words<M: GuestMemory>(mem: &M, cr3: u64, cr4: u64, rsp: u64, lstar: u64, words: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for i in 0..words as u64 {
        let Some(va) = rsp.checked_add(i * 8) else { break };
        let Some(pa) = translate(mem, cr3, cr4, va) else { break };
        let Ok(w) = mem.read_obj::<u64>(GuestAddress(pa)) else { break };
        if w.abs_diff(lstar) < TEXT_SPAN {
            out.push(w.wrapping_sub(lstar) as i64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const KERNEL: u64 = 0xffff_ffff_8100_0000;

    /// Maps `va`'s 4 KiB page to `pa` with tables at 0x1000, 0x2000, 0x3000, 0x4000.
    fn map(mem: &GuestMemoryMmap, va: u64, pa: u64) {
        let e = |next: u64| next | PRESENT | 2;
        let ix = |shift: u32| (va >> shift) & 0x1ff;
        mem.write_obj(e(0x2000), GuestAddress(0x1000 + ix(39) * 8)).unwrap();
        mem.write_obj(e(0x3000), GuestAddress(0x2000 + ix(30) * 8)).unwrap();
        mem.write_obj(e(0x4000), GuestAddress(0x3000 + ix(21) * 8)).unwrap();
        mem.write_obj(e(pa), GuestAddress(0x4000 + ix(12) * 8)).unwrap();
    }

    #[test]
    fn a_mapped_page_translates_and_an_unmapped_one_does_not() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let stack = 0xffff_c900_0001_3000;
        map(&mem, stack, 0x8000);
        assert_eq!(translate(&mem, 0x1000, 0, stack + 0x18), Some(0x8018));
        assert_eq!(translate(&mem, 0x1000, 0, stack + 0x1000), None, "the next page is not mapped");
        assert_eq!(translate(&mem, 0x1000, CR4_LA57, stack), None, "5-level paging is not walked");
        // A 2 MiB page at level 2.
        let big = 0xffff_8880_0020_0000u64;
        let ix = |shift: u32| (big >> shift) & 0x1ff;
        mem.write_obj(0x5000 | PRESENT, GuestAddress(0x1000 + ix(39) * 8)).unwrap();
        mem.write_obj(0x6000 | PRESENT, GuestAddress(0x5000 + ix(30) * 8)).unwrap();
        mem.write_obj(0x20_0000 | PRESENT | PAGE_SIZE_BIT, GuestAddress(0x6000 + ix(21) * 8)).unwrap();
        assert_eq!(translate(&mem, 0x1000, 0, big + 0x1234), Some(0x20_1234));
    }

    #[test]
    fn stack_words_into_kernel_text_are_kept_as_offsets() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let rsp = 0xffff_c900_0001_3ff0;
        map(&mem, rsp, 0x8000);
        let lstar = KERNEL + 0x100_0000;
        mem.write_obj(KERNEL + 0x1234, GuestAddress(0x8ff0)).unwrap();
        mem.write_obj(0x7fff_0000_1234u64, GuestAddress(0x8ff8)).unwrap(); // user data
                                                                           // The walk stops at the unmapped next page instead of reading past it.
        assert_eq!(text_words(&mem, 0x1000, 0, rsp, lstar, 8), vec![0x1234 - 0x100_0000]);
    }
}
