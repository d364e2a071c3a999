//! The virtio-gpu 2D command processor: one request in, one response out,
//! the resources and the scanout updated in between. It knows nothing of
//! queues or PCI (the transport feeds it descriptor contents) nor of the
//! display (it talks to a [`Scanout`]), so every command is tested on plain
//! guest memory.

use vm_memory::GuestMemory;

use super::edid::{edid, MAX_SIDE};
use super::protocol::{Command, DisplayOne, Header, Rect, Response, ResponseType, MAX_SCANOUTS};
use super::resources::{Format, Resources, BPP};
use super::scanout::{CursorImage, Frame, Scanout};

/// Host memory a VM's resources may use by default: a 4K double-buffered
/// desktop and its cursor fit with room to spare.
pub const DEFAULT_RESOURCE_CAP: u64 = 256 << 20;

/// What the device counts (for figures and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GpuStats {
    pub requests: u64,
    /// Requests answered with an error.
    pub refused: u64,
    pub transfers: u64,
    pub transfer_bytes: u64,
    pub flushes: u64,
}

/// The device's state for one VM.
#[derive(Debug)]
pub struct Gpu<S: Scanout> {
    resources: Resources,
    /// The display's size (the host window's client area).
    display: (u32, u32),
    /// The resource scanout 0 shows and the part of it that is shown.
    scanout: Option<(u32, Rect)>,
    cursor_resource: u32,
    out: S,
    stats: GpuStats,
}

impl<S: Scanout> Gpu<S> {
    /// A device with a `width` × `height` display whose resources may use
    /// at most `resource_cap` bytes of host memory.
    pub fn new(width: u32, height: u32, resource_cap: u64, out: S) -> Self {
        Gpu {
            resources: Resources::new(resource_cap),
            display: (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE)),
            scanout: None,
            cursor_resource: 0,
            out,
            stats: GpuStats::default(),
        }
    }

    pub fn stats(&self) -> GpuStats {
        self.stats
    }

    pub fn scanout(&self) -> &S {
        &self.out
    }

    /// Host bytes the guest's resources use.
    pub fn resource_bytes(&self) -> u64 {
        self.resources.bytes()
    }

    /// The size of the image the scanout shows, if any.
    pub fn scanout_size(&self) -> Option<(u32, u32)> {
        self.scanout.map(|(_, r)| (r.width, r.height))
    }

    pub fn display_size(&self) -> (u32, u32) {
        self.display
    }

    /// The host changed the display's size; the caller raises the
    /// display-change event so the guest asks GET_DISPLAY_INFO again.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.display = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
    }

    /// Handles one request (the device-readable bytes of a chain) and
    /// returns the response bytes for the device-writable part.
    pub fn process<M: GuestMemory>(&mut self, mem: &M, request: &[u8]) -> Vec<u8> {
        self.stats.requests += 1;
        let (hdr, response) = match Command::decode(request) {
            Ok((hdr, cmd)) => (hdr, self.handle(mem, cmd).unwrap_or_else(Response::Error)),
            Err(e) => {
                tracing::debug!(error = %e, "virtio-gpu: malformed request");
                (Header::decode(request).unwrap_or_default(), Response::Error(e.response()))
            }
        };
        if let Response::Error(t) = &response {
            self.stats.refused += 1;
            tracing::debug!(?t, type_ = hdr.type_, "virtio-gpu: request refused");
        }
        response.encode(&hdr)
    }

    fn handle<M: GuestMemory>(&mut self, mem: &M, cmd: Command) -> Result<Response, ResponseType> {
        match cmd {
            Command::GetDisplayInfo => {
                let (width, height) = self.display;
                Ok(Response::DisplayInfo(vec![DisplayOne { rect: Rect { x: 0, y: 0, width, height }, enabled: true }]))
            }
            Command::GetEdid { scanout } => {
                check_scanout(scanout)?;
                Ok(Response::Edid(edid(self.display.0, self.display.1).to_vec()))
            }
            Command::ResourceCreate2d { resource_id, format, width, height } => {
                self.resources.create_2d(resource_id, format, width, height).map(|()| Response::Nodata)
            }
            Command::ResourceUnref { resource_id } => {
                self.resources.unref(resource_id)?;
                if self.scanout.is_some_and(|(id, _)| id == resource_id) {
                    self.scanout = None;
                    self.out.set_mode(None);
                }
                if self.cursor_resource == resource_id {
                    self.cursor_resource = 0;
                }
                Ok(Response::Nodata)
            }
            Command::ResourceAttachBacking { resource_id, entries } => {
                self.resources.attach_backing(mem, resource_id, entries).map(|()| Response::Nodata)
            }
            Command::ResourceDetachBacking { resource_id } => {
                self.resources.detach_backing(resource_id).map(|()| Response::Nodata)
            }
            Command::TransferToHost2d { rect, offset, resource_id } => {
                let n = self.resources.transfer_to_host(mem, resource_id, rect, offset)?;
                self.stats.transfers += 1;
                self.stats.transfer_bytes += n;
                Ok(Response::Nodata)
            }
            Command::SetScanout { rect, scanout_id, resource_id } => {
                check_scanout(scanout_id)?;
                if resource_id == 0 {
                    self.scanout = None;
                    self.out.set_mode(None);
                    return Ok(Response::Nodata);
                }
                let r = self.resources.get(resource_id)?;
                if rect.is_empty() || !rect.fits(r.width, r.height) {
                    return Err(ResponseType::ErrInvalidParameter);
                }
                self.scanout = Some((resource_id, rect));
                self.out.set_mode(Some((rect.width, rect.height)));
                Ok(Response::Nodata)
            }
            Command::ResourceFlush { rect, resource_id } => {
                let r = self.resources.get(resource_id)?;
                if !rect.fits(r.width, r.height) {
                    return Err(ResponseType::ErrInvalidParameter);
                }
                if let Some((id, shown)) = self.scanout.filter(|(id, _)| *id == resource_id) {
                    if let Some(damage) = intersect(rect, shown) {
                        let frame = Frame { width: r.width, height: r.height, format: r.format, pixels: &r.pixels };
                        debug_assert_eq!(id, resource_id);
                        self.stats.flushes += 1;
                        self.out.flush(&frame, damage);
                    }
                }
                Ok(Response::Nodata)
            }
            Command::UpdateCursor { scanout_id, x, y, resource_id, hot_x, hot_y } => {
                check_scanout(scanout_id)?;
                let image = if resource_id == 0 {
                    None
                } else {
                    let r = self.resources.get(resource_id)?;
                    Some(CursorImage {
                        width: r.width,
                        height: r.height,
                        hot_x: hot_x.min(r.width - 1),
                        hot_y: hot_y.min(r.height - 1),
                        argb: to_argb(r.format, &r.pixels),
                    })
                };
                self.cursor_resource = resource_id;
                self.out.cursor(Some(image), x, y);
                Ok(Response::Nodata)
            }
            Command::MoveCursor { scanout_id, x, y } => {
                check_scanout(scanout_id)?;
                self.out.cursor(None, x, y);
                Ok(Response::Nodata)
            }
            Command::Unsupported(_) => Err(ResponseType::ErrUnspec),
        }
    }
}

fn check_scanout(id: u32) -> Result<(), ResponseType> {
    if id < MAX_SCANOUTS {
        Ok(())
    } else {
        Err(ResponseType::ErrInvalidScanoutId)
    }
}

/// The overlap of two rectangles, if any.
fn intersect(a: Rect, b: Rect) -> Option<Rect> {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (u64::from(a.x) + u64::from(a.width)).min(u64::from(b.x) + u64::from(b.width));
    let y1 = (u64::from(a.y) + u64::from(a.height)).min(u64::from(b.y) + u64::from(b.height));
    (x1 > u64::from(x0) && y1 > u64::from(y0)).then(|| Rect {
        x: x0,
        y: y0,
        width: (x1 - u64::from(x0)) as u32,
        height: (y1 - u64::from(y0)) as u32,
    })
}

fn to_argb(format: Format, pixels: &[u8]) -> Vec<u8> {
    pixels.chunks_exact(BPP as usize).flat_map(|p| format.to_argb8888(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::gpu::protocol::encode::{attach_backing, request, transfer};
    use crate::virtio::gpu::protocol::HDR_SIZE;
    use crate::virtio::gpu::scanout::Recorder;
    use virtio_bindings::virtio_gpu as b;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const CREATE: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D;
    const BGRA: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn resp(out: &[u8]) -> u32 {
        Header::decode(out).unwrap().type_
    }

    #[track_caller]
    fn ok(out: &[u8]) {
        assert_eq!(resp(out), ResponseType::OkNodata.code(), "response {:#x}", resp(out));
    }

    fn gpu() -> Gpu<Recorder> {
        Gpu::new(1280, 800, 1 << 20, Recorder::default())
    }

    /// A 16x8 resource backed by guest memory at 0x10000 whose pixel (x, y)
    /// is [x, y, 7, 255] (B, G, R, A), transferred and shown on the scanout.
    fn shown(g: &mut Gpu<Recorder>, m: &GuestMemoryMmap<()>) {
        ok(&g.process(m, &request(CREATE, &[1, BGRA, 16, 8])));
        let img: Vec<u8> = (0..8u8).flat_map(|y| (0..16u8).flat_map(move |x| [x, y, 7, 255])).collect();
        m.write_slice(&img, GuestAddress(0x10000)).unwrap();
        // Two backing runs, split inside a row.
        ok(&g.process(m, &attach_backing(1, &[(0x10000, 200), (0x10000 + 200, 512 - 200)])));
        ok(&g.process(m, &transfer(1, Rect { x: 0, y: 0, width: 16, height: 8 }, 0)));
        ok(&g.process(m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT, &[0, 0, 16, 8, 0, 1])));
    }

    #[test]
    fn display_info_and_edid_follow_the_display_size() {
        let (m, mut g) = (mem(), gpu());
        let out = g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]));
        assert_eq!(resp(&out), ResponseType::OkDisplayInfo.code());
        assert_eq!(&out[HDR_SIZE + 8..HDR_SIZE + 20], &[0, 5, 0, 0, 0x20, 3, 0, 0, 1, 0, 0, 0]);
        g.resize(1024, 768);
        let out = g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID, &[0, 0]));
        assert_eq!(resp(&out), ResponseType::OkEdid.code());
        let e = &out[HDR_SIZE + 8..HDR_SIZE + 8 + 128];
        assert_eq!((u32::from(e[56]) | (u32::from(e[58] >> 4) << 8)), 1024);
        let bad = g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID, &[1, 0]));
        assert_eq!(resp(&bad), ResponseType::ErrInvalidScanoutId.code());
    }

    #[test]
    fn transfer_flush_reaches_the_scanout_with_only_the_damage() {
        let (m, mut g) = (mem(), gpu());
        shown(&mut g, &m);
        assert_eq!(g.scanout().modes, [Some((16, 8))]);
        // A partial transfer at an offset, then a flush of a 3x2 rectangle.
        m.write_slice(&[9u8; 12], GuestAddress(0x10000 + (2 * 16 + 4) * 4)).unwrap();
        ok(&g.process(&m, &transfer(1, Rect { x: 4, y: 2, width: 3, height: 1 }, (2 * 16 + 4) * 4)));
        let flush = request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH, &[4, 2, 3, 2, 1, 0]);
        ok(&g.process(&m, &flush));
        let (damage, px) = &g.scanout().flushes[0];
        assert_eq!(*damage, Rect { x: 4, y: 2, width: 3, height: 2 });
        assert_eq!(px.len(), 3 * 2 * 4, "only the damaged pixels");
        assert_eq!(&px[..12], &[9; 12]);
        assert_eq!(&px[12..16], &[4, 3, 7, 255], "row 3 is the earlier transfer");
        let s = g.stats();
        assert_eq!((s.transfers, s.transfer_bytes, s.flushes), (2, 16 * 8 * 4 + 12, 1));
    }

    #[test]
    fn hostile_requests_get_errors_and_nothing_changes() {
        let (m, mut g) = (mem(), gpu());
        let code = |g: &mut Gpu<Recorder>, req: Vec<u8>| resp(&g.process(&m, &req));
        // Sizes that overflow, zero, unknown formats, id 0, duplicates.
        assert_eq!(
            code(&mut g, request(CREATE, &[1, BGRA, u32::MAX, u32::MAX])),
            ResponseType::ErrInvalidParameter.code()
        );
        assert_eq!(code(&mut g, request(CREATE, &[1, BGRA, 0, 8])), ResponseType::ErrInvalidParameter.code());
        assert_eq!(code(&mut g, request(CREATE, &[1, 999, 8, 8])), ResponseType::ErrInvalidParameter.code());
        assert_eq!(code(&mut g, request(CREATE, &[0, BGRA, 8, 8])), ResponseType::ErrInvalidResourceId.code());
        // More than the cap (1 MiB): 1024x1024x4 = 4 MiB.
        assert_eq!(code(&mut g, request(CREATE, &[2, BGRA, 1024, 1024])), ResponseType::ErrOutOfMemory.code());
        assert_eq!(g.resource_bytes(), 0);
        assert_eq!(code(&mut g, request(CREATE, &[1, BGRA, 16, 8])), ResponseType::OkNodata.code());
        assert_eq!(code(&mut g, request(CREATE, &[1, BGRA, 16, 8])), ResponseType::ErrInvalidResourceId.code());
        // Backing outside guest RAM, or wrapping around.
        assert_eq!(code(&mut g, attach_backing(1, &[(1 << 20, 4096)])), ResponseType::ErrInvalidParameter.code());
        assert_eq!(code(&mut g, attach_backing(1, &[(u64::MAX - 10, 4096)])), ResponseType::ErrInvalidParameter.code());
        // Transfer without backing, outside the resource, past the backing.
        let full = Rect { x: 0, y: 0, width: 16, height: 8 };
        assert_eq!(code(&mut g, transfer(1, full, 0)), ResponseType::ErrInvalidParameter.code());
        assert_eq!(code(&mut g, attach_backing(1, &[(0x1000, 256)])), ResponseType::OkNodata.code());
        assert_eq!(code(&mut g, transfer(1, full, 0)), ResponseType::ErrInvalidParameter.code(), "backing too short");
        let outside = Rect { x: 10, y: 0, width: 7, height: 1 };
        assert_eq!(code(&mut g, transfer(1, outside, 0)), ResponseType::ErrInvalidParameter.code());
        assert_eq!(
            code(&mut g, transfer(1, Rect { x: 0, y: 0, width: 1, height: 1 }, u64::MAX)),
            ResponseType::ErrInvalidParameter.code()
        );
        // Scanout and flush checks.
        let set = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT;
        assert_eq!(code(&mut g, request(set, &[0, 0, 16, 8, 5, 1])), ResponseType::ErrInvalidScanoutId.code());
        assert_eq!(code(&mut g, request(set, &[0, 0, 17, 8, 0, 1])), ResponseType::ErrInvalidParameter.code());
        assert_eq!(code(&mut g, request(set, &[0, 0, 16, 8, 0, 9])), ResponseType::ErrInvalidResourceId.code());
        let flush = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH;
        assert_eq!(code(&mut g, request(flush, &[0, 0, 99, 1, 1, 0])), ResponseType::ErrInvalidParameter.code());
        // Malformed and unsupported requests.
        assert_eq!(code(&mut g, vec![0; 8]), ResponseType::ErrInvalidParameter.code(), "shorter than a header");
        assert_eq!(code(&mut g, request(CREATE, &[3])), ResponseType::ErrInvalidParameter.code());
        assert_eq!(
            code(&mut g, request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SUBMIT_3D, &[0; 2])),
            ResponseType::ErrUnspec.code()
        );
        assert_eq!(g.resource_bytes(), 16 * 8 * 4);
        assert!(g.scanout().flushes.is_empty());
        assert!(g.stats().refused >= 15);
    }

    #[test]
    fn unref_releases_memory_and_disables_the_scanout() {
        let (m, mut g) = (mem(), gpu());
        shown(&mut g, &m);
        ok(&g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, &[1, 0])));
        ok(&g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF, &[1, 0])));
        assert_eq!(g.resource_bytes(), 0);
        assert_eq!(g.scanout().modes, [Some((16, 8)), None]);
        let again = g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF, &[1, 0]));
        assert_eq!(resp(&again), ResponseType::ErrInvalidResourceId.code());
    }

    #[test]
    fn cursor_image_is_converted_and_moves() {
        let (m, mut g) = (mem(), gpu());
        let rgba = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM;
        ok(&g.process(&m, &request(CREATE, &[5, rgba, 2, 1])));
        m.write_slice(&[10, 20, 30, 40, 50, 60, 70, 80], GuestAddress(0x2000)).unwrap();
        ok(&g.process(&m, &attach_backing(5, &[(0x2000, 8)])));
        ok(&g.process(&m, &transfer(5, Rect { x: 0, y: 0, width: 2, height: 1 }, 0)));
        let update = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
        ok(&g.process(&m, &request(update, &[0, 100, 50, 0, 5, 9, 0, 0])));
        let img = g.scanout().cursor_images[0].clone().unwrap();
        assert_eq!((img.hot_x, img.hot_y), (1, 0), "hot spot clamped into the image");
        assert_eq!(img.argb, [30, 20, 10, 40, 70, 60, 50, 80], "RGBA became B, G, R, A");
        ok(&g.process(&m, &request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR, &[0, 7, 8, 0, 0, 0, 0, 0])));
        assert_eq!(g.scanout().cursor_at, Some((7, 8)));
        ok(&g.process(&m, &request(update, &[0, 0, 0, 0, 0, 0, 0, 0])));
        assert_eq!(g.scanout().cursor_images[1], None, "resource 0 hides the cursor");
    }

    #[test]
    fn fenced_requests_echo_their_fence() {
        let (m, mut g) = (mem(), gpu());
        let mut req = crate::virtio::gpu::protocol::encode::header(
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            Some(41),
        );
        req.truncate(HDR_SIZE);
        let h = Header::decode(&g.process(&m, &req)).unwrap();
        assert_eq!(h.fence_id, 41);
    }
}
