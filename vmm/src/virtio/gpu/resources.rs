//! The guest's 2D resources: a host copy of each (width × height × 4 bytes)
//! and the guest pages that back it. Every size, rectangle and backing entry
//! the guest sends is checked here: dimensions that overflow, rectangles
//! outside the resource, backing outside guest RAM, and more host memory than
//! the VM's cap are refused with the matching virtio-gpu error.

use std::collections::HashMap;

use virtio_bindings::virtio_gpu as b;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::protocol::{MemEntry, Rect, ResponseType};

/// The 32-bit formats a 2D resource may have (virtio 1.2, 5.7.6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    B8G8R8A8,
    B8G8R8X8,
    A8R8G8B8,
    X8R8G8B8,
    R8G8B8A8,
    X8B8G8R8,
    A8B8G8R8,
    R8G8B8X8,
}

impl Format {
    pub fn from_code(code: u32) -> Option<Format> {
        Some(match code {
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM => Format::B8G8R8A8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => Format::B8G8R8X8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM => Format::A8R8G8B8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => Format::X8R8G8B8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM => Format::R8G8B8A8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => Format::X8B8G8R8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM => Format::A8B8G8R8,
            b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => Format::R8G8B8X8,
            _ => return None,
        })
    }

    /// Byte positions of (red, green, blue, alpha) in one pixel; alpha is
    /// `None` for the X formats (opaque).
    fn layout(self) -> ([usize; 3], Option<usize>) {
        match self {
            Format::B8G8R8A8 => ([2, 1, 0], Some(3)),
            Format::B8G8R8X8 => ([2, 1, 0], None),
            Format::A8R8G8B8 => ([1, 2, 3], Some(0)),
            Format::X8R8G8B8 => ([1, 2, 3], None),
            Format::R8G8B8A8 => ([0, 1, 2], Some(3)),
            Format::X8B8G8R8 => ([3, 2, 1], None),
            Format::A8B8G8R8 => ([3, 2, 1], Some(0)),
            Format::R8G8B8X8 => ([0, 1, 2], None),
        }
    }

    /// Whether pixels are already in wl_shm ARGB8888/XRGB8888 byte order
    /// (little-endian B, G, R, A): the presenter copies them as they are.
    pub fn is_wl_shm_native(self) -> bool {
        matches!(self, Format::B8G8R8A8 | Format::B8G8R8X8)
    }

    /// One pixel as little-endian ARGB8888 bytes (B, G, R, A).
    pub fn to_argb8888(self, px: &[u8]) -> [u8; 4] {
        let ([r, g, bl], a) = self.layout();
        [px[bl], px[g], px[r], a.map_or(0xff, |a| px[a])]
    }
}

/// Bytes per pixel of every 2D format.
pub const BPP: u64 = 4;

/// One 2D resource.
#[derive(Debug)]
pub struct Resource {
    pub width: u32,
    pub height: u32,
    pub format: Format,
    /// The host copy, `width * 4` bytes per row.
    pub pixels: Vec<u8>,
    backing: Vec<MemEntry>,
}

impl Resource {
    pub fn stride(&self) -> u64 {
        u64::from(self.width) * BPP
    }

    /// Copies `len` bytes of the backing, from byte `offset` of its linear
    /// view, into `out`. `false` when the backing is shorter or unreadable.
    fn read_backing<M: GuestMemory>(&self, mem: &M, offset: u64, out: &mut [u8]) -> bool {
        let mut skip = offset;
        let mut done = 0usize;
        for e in &self.backing {
            if done == out.len() {
                break;
            }
            let len = u64::from(e.length);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(out.len() - done);
            let Some(addr) = e.addr.checked_add(skip) else { return false };
            if mem.read_slice(&mut out[done..done + n], GuestAddress(addr)).is_err() {
                return false;
            }
            done += n;
            skip = 0;
        }
        done == out.len()
    }
}

/// All resources of one device, with the host memory they use.
#[derive(Debug)]
pub struct Resources {
    map: HashMap<u32, Resource>,
    bytes: u64,
    cap: u64,
}

impl Resources {
    /// An empty table whose resources may use at most `cap` bytes of host memory.
    pub fn new(cap: u64) -> Self {
        Resources { map: HashMap::new(), bytes: 0, cap }
    }

    /// Host bytes the resources use now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, id: u32) -> Result<&Resource, ResponseType> {
        self.map.get(&id).ok_or(ResponseType::ErrInvalidResourceId)
    }

    pub fn create_2d(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<(), ResponseType> {
        if id == 0 || self.map.contains_key(&id) {
            return Err(ResponseType::ErrInvalidResourceId);
        }
        let format = Format::from_code(format).ok_or(ResponseType::ErrInvalidParameter)?;
        if width == 0 || height == 0 {
            return Err(ResponseType::ErrInvalidParameter);
        }
        let size = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|p| p.checked_mul(BPP))
            .ok_or(ResponseType::ErrInvalidParameter)?;
        if self.bytes.saturating_add(size) > self.cap {
            return Err(ResponseType::ErrOutOfMemory);
        }
        let len = usize::try_from(size).map_err(|_| ResponseType::ErrOutOfMemory)?;
        self.map.insert(id, Resource { width, height, format, pixels: vec![0; len], backing: Vec::new() });
        self.bytes += size;
        Ok(())
    }

    pub fn unref(&mut self, id: u32) -> Result<(), ResponseType> {
        let r = self.map.remove(&id).ok_or(ResponseType::ErrInvalidResourceId)?;
        self.bytes -= r.pixels.len() as u64;
        Ok(())
    }

    /// Replaces the resource's backing; every entry must lie in guest RAM.
    pub fn attach_backing<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u32,
        entries: Vec<MemEntry>,
    ) -> Result<(), ResponseType> {
        let r = self.map.get_mut(&id).ok_or(ResponseType::ErrInvalidResourceId)?;
        for e in &entries {
            if e.length == 0 || !mem.check_range(GuestAddress(e.addr), e.length as usize, Permissions::Read) {
                return Err(ResponseType::ErrInvalidParameter);
            }
        }
        r.backing = entries;
        Ok(())
    }

    pub fn detach_backing(&mut self, id: u32) -> Result<(), ResponseType> {
        let r = self.map.get_mut(&id).ok_or(ResponseType::ErrInvalidResourceId)?;
        r.backing.clear();
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D: copies `rect` from the backing (a linear image
    /// with the resource's stride, `offset` being where `rect` starts) into
    /// the host copy. Returns the bytes copied.
    pub fn transfer_to_host<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u32,
        rect: Rect,
        offset: u64,
    ) -> Result<u64, ResponseType> {
        let r = self.map.get_mut(&id).ok_or(ResponseType::ErrInvalidResourceId)?;
        if !rect.fits(r.width, r.height) || r.backing.is_empty() {
            return Err(ResponseType::ErrInvalidParameter);
        }
        let stride = r.stride();
        let row_len = u64::from(rect.width) * BPP;
        // Whole-width transfers are one contiguous run.
        let (rows, run) = if rect.x == 0 && rect.width == r.width {
            (1, row_len * u64::from(rect.height))
        } else {
            (u64::from(rect.height), row_len)
        };
        // The host copy is taken out while the backing is read into it.
        let mut pixels = std::mem::take(&mut r.pixels);
        let mut copied = 0;
        for row in 0..rows {
            let dst = (u64::from(rect.y) + row) * stride + u64::from(rect.x) * BPP;
            let ok = match (offset.checked_add(row * stride), pixels.get_mut(dst as usize..(dst + run) as usize)) {
                (Some(src), Some(out)) => r.read_backing(mem, src, out),
                _ => false,
            };
            if !ok {
                r.pixels = pixels;
                return Err(ResponseType::ErrInvalidParameter);
            }
            copied += run;
        }
        r.pixels = pixels;
        Ok(copied)
    }
}
