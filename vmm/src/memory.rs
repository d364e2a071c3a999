//! Guest RAM.
//!
//! RAM is one memfd, mapped shared, so that vhost-user backends can later map
//! the very same pages (`VHOST_USER_SET_MEM_TABLE` passes the fd). It is split
//! in two regions around the 32-bit MMIO gap: `[0, min(size, MMIO_GAP_START))`
//! and, for larger guests, `[4 GiB, 4 GiB + rest)`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vm_memory::{Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory as the rest of the VMM uses it.
pub type GuestMem = GuestMemoryMmap<()>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memfd_create for guest RAM failed: {0}")]
    Memfd(std::io::Error),
    #[error("cannot size guest RAM memfd to {size} bytes: {source}")]
    Truncate { size: u64, source: std::io::Error },
    #[error("cannot map guest RAM: {0}")]
    Map(String),
    #[error("guest RAM size {0} is not a multiple of 4 KiB")]
    Unaligned(u64),
}

/// The RAM regions of a guest with `size` bytes of memory: (guest address, length).
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, u64)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low)];
    if size > MMIO_GAP_START {
        regions.push((GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START));
    }
    regions
}

/// Guest RAM backed by a memfd.
pub struct GuestRam {
    pub memory: GuestMem,
    pub memfd: File,
    pub size: u64,
}

impl GuestRam {
    /// Creates `size` bytes of guest RAM. Pages are not touched: they are
    /// allocated by the host kernel when the guest first uses them.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        if size % 4096 != 0 {
            return Err(MemoryError::Unaligned(size));
        }
        let name = CString::new("rayos-guest-ram").expect("static name");
        // SAFETY: `name` is a valid NUL-terminated string; the flags are valid.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(size).map_err(|source| MemoryError::Truncate { size, source })?;
        let mut offset = 0u64;
        let mut ranges = Vec::new();
        for (addr, len) in ram_regions(size) {
            let file = memfd.try_clone().map_err(MemoryError::Memfd)?;
            ranges.push((addr, len as usize, Some(FileOffset::new(file, offset))));
            offset += len;
        }
        let memory = GuestMemoryMmap::from_ranges_with_files(ranges).map_err(|e| MemoryError::Map(e.to_string()))?;
        for r in memory.iter() {
            let host = memory.get_host_address(r.start_addr()).expect("region start is mapped");
            // Huge pages for guest RAM: far fewer faults and 2 MiB nested page
            // mappings. Shared memory gets them when the host allows it
            // (/sys/kernel/mm/transparent_hugepage/shmem_enabled = advise, which
            // RayOS sets); otherwise this is a no-op.
            // SAFETY: the range is a live mapping owned by `memory`; MADV_HUGEPAGE
            // changes no contents.
            let rc = unsafe { libc::madvise(host.cast(), r.len() as usize, libc::MADV_HUGEPAGE) };
            if rc != 0 {
                tracing::debug!("madvise(MADV_HUGEPAGE) on guest RAM: {}", std::io::Error::last_os_error());
            }
        }
        Ok(GuestRam { memory, memfd, size })
    }

    /// Raw fd of the memfd (for vhost-user memory tables).
    pub fn fd(&self) -> i32 {
        self.memfd.as_raw_fd()
    }

    /// End of the RAM below the MMIO gap.
    pub fn low_end(&self) -> GuestAddress {
        GuestAddress(self.size.min(MMIO_GAP_START))
    }

    /// Registers every region with KVM as a user memory slot.
    pub fn register(&self, vm: &kvm_ioctls::VmFd) -> Result<(), kvm_ioctls::Error> {
        for (slot, region) in self.memory.iter().enumerate() {
            let host = self.memory.get_host_address(region.start_addr()).expect("region start is mapped");
            let mem_region = kvm_bindings::kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range [host, host + len) is a live mapping owned by
            // `self.memory`, which outlives the VM (the VM is dropped first).
            unsafe { vm.set_user_memory_region(mem_region)? };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region() {
        let r = ram_regions(512 << 20);
        assert_eq!(r, vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn large_guest_is_split_around_the_gap() {
        let r = ram_regions(4 << 30);
        assert_eq!(
            r,
            vec![(GuestAddress(0), MMIO_GAP_START), (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)]
        );
    }

    #[test]
    fn memfd_backed_memory_is_readable_and_writable() {
        use vm_memory::Bytes;
        let ram = GuestRam::new(16 << 20).unwrap();
        ram.memory.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert_eq!(ram.memory.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert!(ram.fd() >= 0);
        assert!(GuestRam::new(4097).is_err());
    }
}
