//! The headless backend: one offscreen output rendered with pixman.
//!
//! Design note: the output is a pixman image of fixed size (default
//! 1280x800) in memory, kept across frames, so it always holds the last
//! frame and a render only needs to repaint the damage since then (buffer
//! age 1). Smithay's `OutputDamageTracker` compares the scene's elements
//! (ids and commit counters) with the previous frame: an idle scene renders
//! nothing, which [`RenderStats`] counts. Pixels are read back with the
//! renderer's `ExportMem` copy in RGBA byte order for PNG screenshots; a
//! window shot renders that window alone into a scratch image, so windows
//! above it do not hide it.

use smithay::backend::allocator::Fourcc;
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::element::RenderElement;
use smithay::backend::renderer::pixman::{PixmanError, PixmanRenderer};
use smithay::backend::renderer::{Bind, ExportMem, Offscreen};
use smithay::output::{Mode as OutputMode, Output, PhysicalProperties, Subpixel};
use smithay::reexports::pixman::Image;
use smithay::utils::{Physical, Rectangle, Size, Transform};

/// Errors of the headless backend.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error("pixman renderer: {0}")]
    Renderer(#[from] PixmanError),
    #[error("damage tracking: {0}")]
    Damage(String),
    #[error("region {0:?} is empty or outside the image")]
    BadRegion(Rectangle<i32, Physical>),
}

/// Name of the headless output.
pub const OUTPUT_NAME: &str = "HEADLESS-1";
/// Refresh rate advertised (mHz), also the frame pace.
pub const REFRESH_MHZ: i32 = 60_000;

/// Render counters (for tests and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Frames that repainted something.
    pub repaints: u64,
    /// Frames with no damage: nothing was painted.
    pub idle_frames: u64,
}

/// One offscreen output.
pub struct HeadlessBackend {
    renderer: PixmanRenderer,
    image: Image<'static, 'static>,
    damage: OutputDamageTracker,
    output: Output,
    size: Size<i32, Physical>,
    stats: RenderStats,
}

impl std::fmt::Debug for HeadlessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadlessBackend").field("size", &self.size).field("stats", &self.stats).finish()
    }
}

/// Colour of the output where no window is (dark grey-blue), RGBA.
pub const BACKGROUND: [f32; 4] = [0.12, 0.13, 0.16, 1.0];

impl HeadlessBackend {
    /// An output of `w`x`h` pixels; the caller creates its global.
    pub fn new(w: i32, h: i32) -> Result<Self, HeadlessError> {
        let mut renderer = PixmanRenderer::new()?;
        let size: Size<i32, Physical> = (w, h).into();
        let image = renderer.create_buffer(Fourcc::Argb8888, (w, h).into())?;
        let output = Output::new(
            OUTPUT_NAME.to_string(),
            PhysicalProperties {
                size: (0, 0).into(),
                subpixel: Subpixel::Unknown,
                make: "RayOS".into(),
                model: "headless".into(),
            },
        );
        let mode = OutputMode { size, refresh: REFRESH_MHZ };
        output.change_current_state(Some(mode), Some(Transform::Normal), None, Some((0, 0).into()));
        output.set_preferred(mode);
        let damage = OutputDamageTracker::from_output(&output);
        Ok(HeadlessBackend { renderer, image, damage, output, size, stats: RenderStats::default() })
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub fn size(&self) -> Size<i32, Physical> {
        self.size
    }

    pub fn stats(&self) -> RenderStats {
        self.stats
    }

    pub fn renderer(&mut self) -> &mut PixmanRenderer {
        &mut self.renderer
    }

    /// Renders the scene (front to back) onto the output, repainting only
    /// the damage. Returns whether anything was painted.
    pub fn render<E: RenderElement<PixmanRenderer>>(&mut self, elements: &[E]) -> Result<bool, HeadlessError> {
        let mut fb = self.renderer.bind(&mut self.image)?;
        let result = self
            .damage
            .render_output(&mut self.renderer, &mut fb, 1, elements, BACKGROUND)
            .map_err(|e| HeadlessError::Damage(format!("{e:?}")))?;
        let painted = result.damage.is_some_and(|d| !d.is_empty());
        if painted {
            self.stats.repaints += 1;
        } else {
            self.stats.idle_frames += 1;
        }
        Ok(painted)
    }

    /// Reads a region of the output as RGBA rows (no padding).
    pub fn read_rgba(&mut self, region: Rectangle<i32, Physical>) -> Result<Vec<u8>, HeadlessError> {
        let full = Rectangle::from_size(self.size);
        let clipped = region.intersection(full).ok_or(HeadlessError::BadRegion(region))?;
        if clipped != region {
            return Err(HeadlessError::BadRegion(region));
        }
        let fb = self.renderer.bind(&mut self.image)?;
        copy_rgba(&mut self.renderer, &fb, region)
    }

    /// Renders `elements` alone into a fresh `w`x`h` image (elements placed
    /// relative to its top-left corner) and returns its RGBA pixels.
    pub fn render_offscreen<E: RenderElement<PixmanRenderer>>(
        &mut self,
        w: i32,
        h: i32,
        elements: &[E],
    ) -> Result<Vec<u8>, HeadlessError> {
        let mut image: Image<'static, 'static> = self.renderer.create_buffer(Fourcc::Argb8888, (w, h).into())?;
        let mut tracker = OutputDamageTracker::new((w, h), 1.0, Transform::Normal);
        let mut fb = self.renderer.bind(&mut image)?;
        tracker
            .render_output(&mut self.renderer, &mut fb, 0, elements, BACKGROUND)
            .map_err(|e| HeadlessError::Damage(format!("{e:?}")))?;
        copy_rgba(&mut self.renderer, &fb, Rectangle::from_size((w, h).into()))
    }
}

fn copy_rgba(
    renderer: &mut PixmanRenderer,
    fb: &<PixmanRenderer as smithay::backend::renderer::RendererSuper>::Framebuffer<'_>,
    region: Rectangle<i32, Physical>,
) -> Result<Vec<u8>, HeadlessError> {
    let buffer_region = Rectangle::new((region.loc.x, region.loc.y).into(), (region.size.w, region.size.h).into());
    // Abgr8888 is R, G, B, A in memory on little-endian machines: PNG's RGBA.
    let mapping = renderer.copy_framebuffer(fb, buffer_region, Fourcc::Abgr8888)?;
    let bytes = renderer.map_texture(&mapping)?;
    let (w, h) = (region.size.w as usize, region.size.h as usize);
    let stride = bytes.len() / h.max(1);
    let mut out = Vec::with_capacity(w * h * 4);
    for row in 0..h {
        out.extend_from_slice(&bytes[row * stride..row * stride + w * 4]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smithay::backend::renderer::element::solid::{SolidColorBuffer, SolidColorRenderElement};
    use smithay::backend::renderer::element::Kind;

    fn element(buf: &SolidColorBuffer, x: i32, y: i32) -> SolidColorRenderElement {
        SolidColorRenderElement::from_buffer(buf, (x, y), 1.0, 1.0, Kind::Unspecified)
    }

    #[test]
    fn idle_scene_does_not_repaint() {
        let mut b = HeadlessBackend::new(320, 200).unwrap();
        let mut buf = SolidColorBuffer::new((40, 30), [1.0, 0.0, 0.0, 1.0]);
        assert!(b.render(&[element(&buf, 10, 10)]).unwrap(), "first frame paints");
        for _ in 0..3 {
            assert!(!b.render(&[element(&buf, 10, 10)]).unwrap(), "unchanged scene paints nothing");
        }
        assert_eq!(b.stats(), RenderStats { repaints: 1, idle_frames: 3 });
        buf.set_color([0.0, 0.0, 1.0, 1.0]);
        assert!(b.render(&[element(&buf, 10, 10)]).unwrap(), "a changed element paints");
        let px = b.read_rgba(Rectangle::new((10, 10).into(), (1, 1).into())).unwrap();
        assert_eq!(px, vec![0, 0, 255, 255]);
        let bg = b.read_rgba(Rectangle::new((0, 0).into(), (1, 1).into())).unwrap();
        assert_eq!(bg[3], 255);
        assert!(b.read_rgba(Rectangle::new((310, 0).into(), (20, 1).into())).is_err());
    }

    #[test]
    fn offscreen_render_places_elements() {
        let mut b = HeadlessBackend::new(320, 200).unwrap();
        let buf = SolidColorBuffer::new((4, 4), [0.0, 1.0, 0.0, 1.0]);
        let px = b.render_offscreen(8, 8, &[element(&buf, 4, 4)]).unwrap();
        assert_eq!(px.len(), 8 * 8 * 4);
        let at = |x: usize, y: usize| &px[(y * 8 + x) * 4..(y * 8 + x) * 4 + 4];
        assert_eq!(at(5, 5), &[0, 255, 0, 255]);
        assert_ne!(at(1, 1), &[0, 255, 0, 255]);
    }
}
