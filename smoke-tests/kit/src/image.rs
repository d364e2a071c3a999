//! 8-bit RGB images from screenshots: decode (PNG from the compositor or
//! QEMU, binary PPM from older QEMU), read pixels, count a rectangle's
//! pixels that match. Colours are the compositor's own.

use std::path::{Path, PathBuf};

use rayos_compositor_ipc::types::{BACKGROUND_COLOUR, HOST_COLOUR};

/// The compositor's output background.
pub const BACKGROUND_RGB: [u8; 3] = [BACKGROUND_COLOUR.r, BACKGROUND_COLOUR.g, BACKGROUND_COLOUR.b];
/// The host origin's decoration colour.
pub const HOST_RGB: [u8; 3] = [HOST_COLOUR.r, HOST_COLOUR.g, HOST_COLOUR.b];
/// Per-channel tolerance of [`near`] (scaled or compressed captures).
pub const TOLERANCE: u8 = 6;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PNG: {0}")]
    Png(#[from] png::DecodingError),
    #[error("unsupported PNG colour type {0:?} (want RGB or RGBA)")]
    Colour(png::ColorType),
    #[error("PPM: {0}")]
    Ppm(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<ImageError>,
    },
}

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub w: u32,
    pub h: u32,
    pub rgb: Vec<u8>,
}

/// A rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn area(&self) -> usize {
        self.w as usize * self.h as usize
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}+{}+{}", self.w, self.h, self.x, self.y)
    }
}

/// Whether two colours match within [`TOLERANCE`] per channel.
pub fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b.iter()).all(|(x, y)| x.abs_diff(*y) <= TOLERANCE)
}

/// Whether a pixel of a lossless capture is the compositor's background.
pub fn is_background(p: [u8; 3]) -> bool {
    p.iter().zip(BACKGROUND_RGB.iter()).all(|(x, y)| x.abs_diff(*y) <= 2)
}

impl Image {
    pub fn new(w: u32, h: u32, fill: [u8; 3]) -> Self {
        Image { w, h, rgb: fill.repeat(w as usize * h as usize) }
    }

    /// Reads a PNG file.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_path_buf(), source })?;
        Self::from_png(&bytes).map_err(|e| ImageError::File { path: path.to_path_buf(), source: Box::new(e) })
    }

    pub fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The pixel at signed coordinates, clamped to the image (for checks
    /// computed from window geometry that may touch an edge).
    pub fn at(&self, x: i64, y: i64) -> [u8; 3] {
        let cx = x.clamp(0, i64::from(self.w.max(1)) - 1) as u32;
        let cy = y.clamp(0, i64::from(self.h.max(1)) - 1) as u32;
        self.px(cx, cy)
    }

    pub fn set(&mut self, x: u32, y: u32, c: [u8; 3]) {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&c);
    }

    pub fn fill(&mut self, r: Rect, c: [u8; 3]) {
        for y in r.y..(r.y + r.h).min(self.h) {
            for x in r.x..(r.x + r.w).min(self.w) {
                self.set(x, y, c);
            }
        }
    }

    /// Pixels in `r` (clipped to the image) for which `f` holds.
    pub fn count(&self, r: Rect, f: impl Fn([u8; 3]) -> bool) -> usize {
        let mut n = 0;
        for y in r.y..(r.y + r.h).min(self.h) {
            for x in r.x..(r.x + r.w).min(self.w) {
                n += usize::from(f(self.px(x, y)));
            }
        }
        n
    }

    /// Pixels of the signed rectangle `x, y, w, h` for which `f` holds (each
    /// position clamped to the image, as [`Image::at`]), and its area.
    pub fn count_at(&self, x: i64, y: i64, w: i64, h: i64, f: impl Fn([u8; 3]) -> bool) -> (usize, usize) {
        let mut n = 0;
        for yy in y..y + h {
            for xx in x..x + w {
                n += usize::from(f(self.at(xx, yy)));
            }
        }
        (n, (w * h).max(0) as usize)
    }

    pub fn whole(&self) -> Rect {
        Rect { x: 0, y: 0, w: self.w, h: self.h }
    }

    /// Decodes an 8-bit (or 16-bit, stripped) RGB or RGBA PNG.
    pub fn from_png(bytes: &[u8]) -> Result<Self, ImageError> {
        let mut decoder = png::Decoder::new(bytes);
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info()?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf)?;
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => return Err(ImageError::Colour(other)),
        };
        let mut rgb = Vec::with_capacity(info.width as usize * info.height as usize * 3);
        for row in buf.chunks(info.line_size).take(info.height as usize) {
            for p in row.chunks(channels).take(info.width as usize) {
                rgb.extend_from_slice(&p[..3]);
            }
        }
        Ok(Image { w: info.width, h: info.height, rgb })
    }

    /// Decodes a binary PPM (P6, maxval 255).
    pub fn from_ppm(bytes: &[u8]) -> Result<Self, ImageError> {
        let bad = |s: String| ImageError::Ppm(s);
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'#' {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return Err(bad("truncated header".into()));
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        if fields[0] != "P6" || fields[3] != "255" {
            return Err(bad(format!("not an 8-bit P6 PPM: {} maxval {}", fields[0], fields[3])));
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad(format!("bad dimension {s:?}")));
        let (w, h) = (num(&fields[1])?, num(&fields[2])?);
        let data = &bytes[(i + 1).min(bytes.len())..];
        let len = w as usize * h as usize * 3;
        if data.len() < len {
            return Err(bad(format!("{w}x{h} holds {} of {len} bytes", data.len())));
        }
        Ok(Image { w, h, rgb: data[..len].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ppm_and_png() {
        let mut ppm = b"P6\n# QEMU\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let img = Image::from_ppm(&ppm).unwrap();
        assert_eq!((img.w, img.h, img.px(1, 0)), (2, 1, [4, 5, 6]));
        assert!(Image::from_ppm(b"P6\n2 1\n255\n\x01").is_err());

        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, 2, 2);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[1, 2, 3, 255, 4, 5, 6, 255, 7, 8, 9, 255, 10, 11, 12, 255]).unwrap();
        }
        let img = Image::from_png(&png_bytes).unwrap();
        assert_eq!((img.w, img.h, img.px(1, 1)), (2, 2, [10, 11, 12]));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.png");
        std::fs::write(&p, &png_bytes[..10]).unwrap();
        let e = Image::load(&p).unwrap_err().to_string();
        assert!(e.contains("x.png"), "{e}");
    }

    #[test]
    fn signed_reads_clamp_and_counts_clip() {
        let mut img = Image::new(4, 3, BACKGROUND_RGB);
        img.set(0, 0, HOST_RGB);
        assert_eq!(img.at(-5, -5), HOST_RGB);
        assert_eq!(img.at(99, 99), BACKGROUND_RGB);
        assert_eq!(img.count(Rect { x: 0, y: 0, w: 10, h: 10 }, is_background), 11);
        assert_eq!(img.count_at(0, 0, 2, 1, |p| p == HOST_RGB), (1, 2));
        assert!(near([31, 33, 41], [35, 30, 45]) && !near([0, 0, 0], BACKGROUND_RGB));
    }
}
