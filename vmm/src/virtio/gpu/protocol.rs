//! The virtio-gpu control and cursor queue messages (virtio 1.2, 5.7.6) as
//! Rust values: [`Command::decode`] reads a request the guest placed in its
//! descriptors, [`Response::encode`] writes the answer. Only the 2D command
//! set is understood; 3D, blob and context commands decode to
//! [`Command::Unsupported`] and get `ERR_UNSPEC`. Everything is read field
//! by field from little-endian bytes: a short, unknown or inconsistent
//! request is a [`ProtocolError`], never a panic or an out-of-bounds read.

use virtio_bindings::virtio_gpu as b;

/// Size of `virtio_gpu_ctrl_hdr`.
pub const HDR_SIZE: usize = 24;
/// Size of one `virtio_gpu_mem_entry`.
pub const MEM_ENTRY_SIZE: usize = 16;
/// Most backing entries one ATTACH_BACKING may list (Linux sends one per
/// contiguous run of pages; 16 Ki covers a fragmented 64 MiB buffer).
pub const MAX_MEM_ENTRIES: u32 = 16 * 1024;
/// Scanouts this device offers (the guest's display outputs).
pub const MAX_SCANOUTS: u32 = 1;
/// Flag: the request carries a fence the response must echo.
pub const FLAG_FENCE: u32 = b::VIRTIO_GPU_FLAG_FENCE;

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request of {got} bytes is shorter than its {want}-byte layout ({what})")]
    Short { what: &'static str, got: usize, want: usize },
    #[error("unknown command type {0:#x}")]
    UnknownType(u32),
    #[error("ATTACH_BACKING lists {0} entries (at most {MAX_MEM_ENTRIES})")]
    TooManyEntries(u32),
}

impl ProtocolError {
    /// The response type a guest gets for this request.
    pub fn response(&self) -> ResponseType {
        match self {
            ProtocolError::UnknownType(_) => ResponseType::ErrUnspec,
            _ => ResponseType::ErrInvalidParameter,
        }
    }
}

/// A rectangle in a resource's or scanout's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// Whether the rectangle lies inside a `width` × `height` area (no overflow).
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.x.checked_add(self.width).is_some_and(|r| r <= width)
            && self.y.checked_add(self.height).is_some_and(|b| b <= height)
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// The header every request and response starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub type_: u32,
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

/// One guest-physical run of a resource's backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEntry {
    pub addr: u64,
    pub length: u32,
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    GetDisplayInfo,
    GetEdid {
        scanout: u32,
    },
    ResourceCreate2d {
        resource_id: u32,
        format: u32,
        width: u32,
        height: u32,
    },
    ResourceUnref {
        resource_id: u32,
    },
    SetScanout {
        rect: Rect,
        scanout_id: u32,
        resource_id: u32,
    },
    ResourceFlush {
        rect: Rect,
        resource_id: u32,
    },
    TransferToHost2d {
        rect: Rect,
        offset: u64,
        resource_id: u32,
    },
    ResourceAttachBacking {
        resource_id: u32,
        entries: Vec<MemEntry>,
    },
    ResourceDetachBacking {
        resource_id: u32,
    },
    UpdateCursor {
        scanout_id: u32,
        x: u32,
        y: u32,
        resource_id: u32,
        hot_x: u32,
        hot_y: u32,
    },
    MoveCursor {
        scanout_id: u32,
        x: u32,
        y: u32,
    },
    /// A command of the 3D, blob or capset families this 2D device does not offer.
    Unsupported(u32),
}

/// Little-endian reads at fixed offsets of one request.
struct Fields<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl Fields<'_> {
    fn need(&self, want: usize) -> Result<(), ProtocolError> {
        if self.bytes.len() < want {
            return Err(ProtocolError::Short { what: self.what, got: self.bytes.len(), want });
        }
        Ok(())
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }
    fn rect(&self, at: usize) -> Rect {
        Rect { x: self.u32(at), y: self.u32(at + 4), width: self.u32(at + 8), height: self.u32(at + 12) }
    }
}

impl Header {
    /// Reads the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Header, ProtocolError> {
        let f = Fields { bytes, what: "header" };
        f.need(HDR_SIZE)?;
        Ok(Header { type_: f.u32(0), flags: f.u32(4), fence_id: f.u64(8), ctx_id: f.u32(16), ring_idx: bytes[20] })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.fence_id.to_le_bytes());
        out.extend_from_slice(&self.ctx_id.to_le_bytes());
        out.extend_from_slice(&[self.ring_idx, 0, 0, 0]);
    }
}

impl Command {
    /// Decodes one request (header included) from the bytes the guest
    /// placed in the device-readable descriptors.
    pub fn decode(bytes: &[u8]) -> Result<(Header, Command), ProtocolError> {
        let hdr = Header::decode(bytes)?;
        let body = |what: &'static str, size: usize| {
            let f = Fields { bytes, what };
            f.need(HDR_SIZE + size).map(|()| f)
        };
        let h = HDR_SIZE;
        let cmd = match hdr.type_ {
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO => Command::GetDisplayInfo,
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID => {
                let f = body("GET_EDID", 8)?;
                Command::GetEdid { scanout: f.u32(h) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D => {
                let f = body("RESOURCE_CREATE_2D", 16)?;
                Command::ResourceCreate2d {
                    resource_id: f.u32(h),
                    format: f.u32(h + 4),
                    width: f.u32(h + 8),
                    height: f.u32(h + 12),
                }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF => {
                let f = body("RESOURCE_UNREF", 8)?;
                Command::ResourceUnref { resource_id: f.u32(h) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT => {
                let f = body("SET_SCANOUT", 24)?;
                Command::SetScanout { rect: f.rect(h), scanout_id: f.u32(h + 16), resource_id: f.u32(h + 20) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH => {
                let f = body("RESOURCE_FLUSH", 24)?;
                Command::ResourceFlush { rect: f.rect(h), resource_id: f.u32(h + 16) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D => {
                let f = body("TRANSFER_TO_HOST_2D", 32)?;
                Command::TransferToHost2d { rect: f.rect(h), offset: f.u64(h + 16), resource_id: f.u32(h + 24) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING => {
                let f = body("RESOURCE_ATTACH_BACKING", 8)?;
                let (resource_id, n) = (f.u32(h), f.u32(h + 4));
                if n > MAX_MEM_ENTRIES {
                    return Err(ProtocolError::TooManyEntries(n));
                }
                let f = body("RESOURCE_ATTACH_BACKING entries", 8 + n as usize * MEM_ENTRY_SIZE)?;
                let entries = (0..n as usize)
                    .map(|i| {
                        let at = h + 8 + i * MEM_ENTRY_SIZE;
                        MemEntry { addr: f.u64(at), length: f.u32(at + 8) }
                    })
                    .collect();
                Command::ResourceAttachBacking { resource_id, entries }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING => {
                let f = body("RESOURCE_DETACH_BACKING", 8)?;
                Command::ResourceDetachBacking { resource_id: f.u32(h) }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR => {
                let f = body("UPDATE_CURSOR", 32)?;
                Command::UpdateCursor {
                    scanout_id: f.u32(h),
                    x: f.u32(h + 4),
                    y: f.u32(h + 8),
                    resource_id: f.u32(h + 16),
                    hot_x: f.u32(h + 20),
                    hot_y: f.u32(h + 24),
                }
            }
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR => {
                let f = body("MOVE_CURSOR", 32)?;
                Command::MoveCursor { scanout_id: f.u32(h), x: f.u32(h + 4), y: f.u32(h + 8) }
            }
            t @ (b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO
            | b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET
            | b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID
            | b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB
            | b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB
            | b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE
                ..=b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB) => Command::Unsupported(t),
            t => return Err(ProtocolError::UnknownType(t)),
        };
        Ok((hdr, cmd))
    }
}

/// The response types this device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    OkNodata,
    OkDisplayInfo,
    OkEdid,
    ErrUnspec,
    ErrOutOfMemory,
    ErrInvalidScanoutId,
    ErrInvalidResourceId,
    ErrInvalidParameter,
}

impl ResponseType {
    pub fn code(self) -> u32 {
        match self {
            ResponseType::OkNodata => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA,
            ResponseType::OkDisplayInfo => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
            ResponseType::OkEdid => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID,
            ResponseType::ErrUnspec => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC,
            ResponseType::ErrOutOfMemory => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
            ResponseType::ErrInvalidScanoutId => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
            ResponseType::ErrInvalidResourceId => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
            ResponseType::ErrInvalidParameter => b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
        }
    }
}

/// One scanout in a display-info response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DisplayOne {
    pub rect: Rect,
    pub enabled: bool,
}

/// A response, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Nodata,
    /// Up to [`b::VIRTIO_GPU_MAX_SCANOUTS`] entries; the rest are zero.
    DisplayInfo(Vec<DisplayOne>),
    /// An EDID blob of at most 1024 bytes.
    Edid(Vec<u8>),
    Error(ResponseType),
}

impl Response {
    pub fn type_(&self) -> ResponseType {
        match self {
            Response::Nodata => ResponseType::OkNodata,
            Response::DisplayInfo(_) => ResponseType::OkDisplayInfo,
            Response::Edid(_) => ResponseType::OkEdid,
            Response::Error(t) => *t,
        }
    }

    /// The response bytes for the request with header `req`: the fence is
    /// echoed when the request asked for one.
    pub fn encode(&self, req: &Header) -> Vec<u8> {
        let fenced = req.flags & FLAG_FENCE != 0;
        let hdr = Header {
            type_: self.type_().code(),
            flags: if fenced { FLAG_FENCE } else { 0 },
            fence_id: if fenced { req.fence_id } else { 0 },
            ctx_id: req.ctx_id,
            ring_idx: 0,
        };
        let mut out = Vec::with_capacity(HDR_SIZE + 408);
        hdr.encode(&mut out);
        match self {
            Response::Nodata | Response::Error(_) => {}
            Response::DisplayInfo(displays) => {
                for i in 0..b::VIRTIO_GPU_MAX_SCANOUTS as usize {
                    let d = displays.get(i).copied().unwrap_or_default();
                    for v in [d.rect.x, d.rect.y, d.rect.width, d.rect.height, u32::from(d.enabled), 0] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            Response::Edid(edid) => {
                let n = edid.len().min(1024);
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&edid[..n]);
                out.resize(HDR_SIZE + 8 + 1024, 0);
            }
        }
        out
    }
}

/// Requests as a guest driver lays them out, for tests and benchmarks.
#[doc(hidden)]
pub mod encode {
    use super::*;

    pub fn header(type_: u32, fence: Option<u64>) -> Vec<u8> {
        let mut v = Vec::new();
        Header {
            type_,
            flags: if fence.is_some() { FLAG_FENCE } else { 0 },
            fence_id: fence.unwrap_or(0),
            ctx_id: 0,
            ring_idx: 0,
        }
        .encode(&mut v);
        v
    }

    /// A request of `type_` whose body is `words` (u32 each, little-endian).
    pub fn request(type_: u32, words: &[u32]) -> Vec<u8> {
        let mut v = header(type_, None);
        for w in words {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    pub fn attach_backing(resource_id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
        let mut v = request(
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
            &[resource_id, entries.len() as u32],
        );
        for (addr, len) in entries {
            v.extend_from_slice(&addr.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
        }
        v
    }

    pub fn transfer(resource_id: u32, rect: Rect, offset: u64) -> Vec<u8> {
        let mut v = request(
            b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
            &[rect.x, rect.y, rect.width, rect.height],
        );
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&resource_id.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    #[test]
    fn decodes_the_2d_commands() {
        let (_, c) =
            Command::decode(&request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, &[7, 1, 64, 32]))
                .unwrap();
        assert_eq!(c, Command::ResourceCreate2d { resource_id: 7, format: 1, width: 64, height: 32 });
        let (_, c) = Command::decode(&attach_backing(7, &[(0x1000, 4096), (0x8000, 4096)])).unwrap();
        assert_eq!(
            c,
            Command::ResourceAttachBacking {
                resource_id: 7,
                entries: vec![MemEntry { addr: 0x1000, length: 4096 }, MemEntry { addr: 0x8000, length: 4096 }]
            }
        );
        let r = Rect { x: 1, y: 2, width: 3, height: 4 };
        let (_, c) = Command::decode(&transfer(7, r, 99)).unwrap();
        assert_eq!(c, Command::TransferToHost2d { rect: r, offset: 99, resource_id: 7 });
        let (_, c) =
            Command::decode(&request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT, &[0, 0, 64, 32, 0, 7]))
                .unwrap();
        assert_eq!(
            c,
            Command::SetScanout { rect: Rect { x: 0, y: 0, width: 64, height: 32 }, scanout_id: 0, resource_id: 7 }
        );
        let (_, c) = Command::decode(&request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE, &[0; 24])).unwrap();
        assert_eq!(c, Command::Unsupported(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE));
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        assert!(matches!(Command::decode(&[0; 10]), Err(ProtocolError::Short { what: "header", .. })));
        let short = request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH, &[0, 0, 1]);
        assert!(matches!(Command::decode(&short), Err(ProtocolError::Short { what: "RESOURCE_FLUSH", .. })));
        assert_eq!(Command::decode(&request(0x42, &[])), Err(ProtocolError::UnknownType(0x42)));
        let many = request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, &[1, u32::MAX]);
        assert_eq!(Command::decode(&many), Err(ProtocolError::TooManyEntries(u32::MAX)));
        // Claims two entries, carries one.
        let mut lying = attach_backing(1, &[(0x1000, 4096)]);
        lying[HDR_SIZE + 4] = 2;
        assert!(matches!(Command::decode(&lying), Err(ProtocolError::Short { .. })));
        assert!(!Rect { x: u32::MAX, y: 0, width: 2, height: 1 }.fits(u32::MAX, 1));
    }

    #[test]
    fn responses_echo_the_fence_and_have_their_sizes() {
        let req = Header::decode(&header(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH, Some(77))).unwrap();
        let r = Response::Nodata.encode(&req);
        assert_eq!(r.len(), HDR_SIZE);
        let h = Header::decode(&r).unwrap();
        assert_eq!((h.type_, h.flags, h.fence_id), (b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA, FLAG_FENCE, 77));
        let info = Response::DisplayInfo(vec![DisplayOne {
            rect: Rect { x: 0, y: 0, width: 1280, height: 800 },
            enabled: true,
        }])
        .encode(&req);
        assert_eq!(info.len(), HDR_SIZE + 16 * 24);
        assert_eq!(&info[HDR_SIZE + 8..HDR_SIZE + 20], &[0, 5, 0, 0, 0x20, 3, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Response::Edid(vec![1; 128]).encode(&req).len(), HDR_SIZE + 8 + 1024);
        let unfenced = Header::decode(&header(1, None)).unwrap();
        assert_eq!(Header::decode(&Response::Error(ResponseType::ErrUnspec).encode(&unfenced)).unwrap().fence_id, 0);
    }
}
