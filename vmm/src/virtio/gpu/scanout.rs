//! Where the guest's display goes: the [`Scanout`] trait. The device calls
//! it when the guest points its scanout at a resource, flushes damage, or
//! moves its cursor; the Wayland presenter (embedded desktop) implements it,
//! and [`Recorder`] does for tests, so device logic runs without a display.

use super::protocol::Rect;
use super::resources::Format;

/// One resource's pixels as the device holds them: 4 bytes per pixel,
/// rows of `width * 4` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: u32,
    pub height: u32,
    pub format: Format,
    pub pixels: &'a [u8],
}

/// The guest's cursor image and hot spot, or none (hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorImage {
    pub width: u32,
    pub height: u32,
    pub hot_x: u32,
    pub hot_y: u32,
    /// Converted to the presenter's order (see [`Format::to_argb8888`]).
    pub argb: Vec<u8>,
}

/// A display the device scans out to.
pub trait Scanout {
    /// The scanout now shows a `width` × `height` image, or nothing (`None`).
    fn set_mode(&mut self, mode: Option<(u32, u32)>);
    /// `damage` (in the frame's pixels) changed; `frame` is the whole image.
    fn flush(&mut self, frame: &Frame<'_>, damage: Rect);
    /// The guest's cursor changed image (`Some(None)` hides it) and/or moved.
    fn cursor(&mut self, image: Option<Option<CursorImage>>, x: u32, y: u32);
    /// The display's own figures, if it has any.
    fn metrics(&self) -> Option<rayos_vmm_api::PresenterMetrics> {
        None
    }
}

/// Any scanout, chosen at run time (`--gpu headless` or `wayland=…`).
impl Scanout for Box<dyn Scanout + Send> {
    fn set_mode(&mut self, mode: Option<(u32, u32)>) {
        (**self).set_mode(mode);
    }
    fn flush(&mut self, frame: &Frame<'_>, damage: Rect) {
        (**self).flush(frame, damage);
    }
    fn cursor(&mut self, image: Option<Option<CursorImage>>, x: u32, y: u32) {
        (**self).cursor(image, x, y);
    }
    fn metrics(&self) -> Option<rayos_vmm_api::PresenterMetrics> {
        (**self).metrics()
    }
}

/// A scanout that discards everything.
#[derive(Debug, Default)]
pub struct NullScanout;

impl Scanout for NullScanout {
    fn set_mode(&mut self, _mode: Option<(u32, u32)>) {}
    fn flush(&mut self, _frame: &Frame<'_>, _damage: Rect) {}
    fn cursor(&mut self, _image: Option<Option<CursorImage>>, _x: u32, _y: u32) {}
}

/// A scanout that records what it was told, for tests.
#[derive(Debug, Default)]
pub struct Recorder {
    pub modes: Vec<Option<(u32, u32)>>,
    /// (damage, the damaged pixels row by row)
    pub flushes: Vec<(Rect, Vec<u8>)>,
    pub cursor_images: Vec<Option<CursorImage>>,
    pub cursor_at: Option<(u32, u32)>,
}

impl Scanout for Recorder {
    fn set_mode(&mut self, mode: Option<(u32, u32)>) {
        self.modes.push(mode);
    }
    fn flush(&mut self, frame: &Frame<'_>, damage: Rect) {
        let stride = frame.width as usize * 4;
        let mut px = Vec::with_capacity(damage.width as usize * damage.height as usize * 4);
        for row in damage.y..damage.y + damage.height {
            let start = row as usize * stride + damage.x as usize * 4;
            px.extend_from_slice(&frame.pixels[start..start + damage.width as usize * 4]);
        }
        self.flushes.push((damage, px));
    }
    fn cursor(&mut self, image: Option<Option<CursorImage>>, x: u32, y: u32) {
        if let Some(i) = image {
            self.cursor_images.push(i);
        }
        self.cursor_at = Some((x, y));
    }
}
