//! Kernel, initramfs and command-line placement in guest memory.

use std::fs::File;
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::cli::KernelFormat;
use crate::layout::*;
use crate::memory::GuestMem;

/// Errors loading what the guest boots.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot load kernel {path}: {reason}")]
    Kernel { path: String, reason: String },
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM between the kernel end {kernel_end:#x} and {limit:#x}; give the guest more --memory")]
    InitramfsTooLarge { path: String, size: u64, kernel_end: u64, limit: u64 },
    #[error("cannot read initramfs {path} into guest memory: {reason}")]
    Initramfs { path: String, reason: String },
    #[error("command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("cannot write the command line to guest memory")]
    Cmdline,
    #[error("e820 map does not fit in the zero page")]
    E820Overflow,
    #[error("cannot write the zero page to guest memory")]
    ZeroPage,
}

/// What the boot vCPU needs to enter the kernel.
#[derive(Debug, Clone, Copy)]
pub struct KernelEntry {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the loaded kernel.
    pub kernel_end: u64,
    /// The bzImage setup header, to be copied into the zero page.
    pub header: Option<setup_header>,
}

/// Loads the kernel image at 1 MiB.
pub fn load_kernel(mem: &GuestMem, path: &Path, format: KernelFormat) -> Result<KernelEntry, BootError> {
    let p = path.display().to_string();
    let mut f = File::open(path).map_err(|source| BootError::Open { path: p.clone(), source })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let kerr = |e: linux_loader::loader::Error| BootError::Kernel { path: p.clone(), reason: e.to_string() };
    match format {
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut f, himem).map_err(kerr)?;
            Ok(KernelEntry {
                // startup_64 sits 0x200 bytes into the protected-mode kernel.
                entry: GuestAddress(r.kernel_load.0 + 0x200),
                kernel_end: r.kernel_end,
                header: r.setup_header,
            })
        }
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut f, himem).map_err(kerr)?;
            Ok(KernelEntry { entry: r.kernel_load, kernel_end: r.kernel_end, header: None })
        }
    }
}

/// Where an initramfs of `size` bytes goes: page-aligned at the top of low RAM,
/// below the kernel's `initrd_addr_max`, above the kernel.
pub fn initramfs_address(
    size: u64,
    low_ram_end: u64,
    initrd_addr_max: Option<u32>,
    kernel_end: u64,
) -> Option<GuestAddress> {
    let mut limit = low_ram_end;
    if let Some(max) = initrd_addr_max {
        if max != 0 {
            limit = limit.min(max as u64 + 1);
        }
    }
    let start = limit.checked_sub(size)? & !0xfff;
    (start >= kernel_end.max(HIMEM_START)).then_some(GuestAddress(start))
}

/// Copies the initramfs into guest memory; returns its address and size.
pub fn load_initramfs(
    mem: &GuestMem,
    path: &Path,
    low_ram_end: u64,
    kernel: &KernelEntry,
) -> Result<(GuestAddress, u64), BootError> {
    let p = path.display().to_string();
    let mut f = File::open(path).map_err(|source| BootError::Open { path: p.clone(), source })?;
    let size = f.metadata().map_err(|source| BootError::Open { path: p.clone(), source })?.len();
    let max = kernel.header.map(|h| h.initrd_addr_max);
    let addr = initramfs_address(size, low_ram_end, max, kernel.kernel_end).ok_or(BootError::InitramfsTooLarge {
        path: p.clone(),
        size,
        kernel_end: kernel.kernel_end,
        limit: low_ram_end,
    })?;
    mem.read_exact_volatile_from(addr, &mut f, size as usize)
        .map_err(|e| BootError::Initramfs { path: p, reason: e.to_string() })?;
    Ok((addr, size))
}

/// Writes the NUL-terminated command line; returns its length without the NUL.
pub fn load_cmdline(mem: &GuestMem, cmdline: &str, kernel: &KernelEntry) -> Result<usize, BootError> {
    let max = match kernel.header {
        Some(h) if h.cmdline_size != 0 => (h.cmdline_size as usize).min(CMDLINE_MAX_SIZE - 1),
        _ => CMDLINE_MAX_SIZE - 1,
    };
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong { len: cmdline.len(), max });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START)).map_err(|_| BootError::Cmdline)?;
    Ok(cmdline.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_goes_to_the_top_of_low_ram() {
        let a = initramfs_address(0x1800, 0x2000_0000, None, 0x200_0000).unwrap();
        assert_eq!(a.0, 0x2000_0000 - 0x2000);
        assert_eq!(a.0 % 4096, 0);
    }

    #[test]
    fn initramfs_respects_initrd_addr_max() {
        let a = initramfs_address(0x1000, 0x8000_0000, Some(0x37ff_ffff), 0x200_0000).unwrap();
        assert_eq!(a.0, 0x3800_0000 - 0x1000);
    }

    #[test]
    fn initramfs_never_overlaps_the_kernel() {
        assert!(initramfs_address(0x1000_0000, 0x1000_0000, None, 0x200_0000).is_none());
        assert!(initramfs_address(u64::MAX, 0x1000_0000, None, 0).is_none());
    }

    #[test]
    fn cmdline_limits() {
        let ram = crate::memory::GuestRam::new(32 << 20).unwrap();
        let k = KernelEntry { entry: GuestAddress(0), kernel_end: 0, header: None };
        assert_eq!(load_cmdline(&ram.memory, "console=ttyS0", &k).unwrap(), 13);
        let mut buf = [0u8; 14];
        ram.memory.read_slice(&mut buf, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let h = setup_header { cmdline_size: 8, ..Default::default() };
        let k = KernelEntry { header: Some(h), ..k };
        assert!(matches!(load_cmdline(&ram.memory, "console=ttyS0", &k), Err(BootError::CmdlineTooLong { .. })));
    }
}
